package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File names inside a `pgquorum cert --dir` directory.
const (
	CACertFile = "ca.pem"
	CAKeyFile  = "ca-key.pem"
)

// NodeFiles returns the certificate and key file names of a node
// certificate: node-7.pem and node-7-key.pem (node-1000-1999.pem for a block).
func NodeFiles(dir string, id Identity) (cert, key string) {
	return filepath.Join(dir, "node-"+id.IDs()+".pem"), filepath.Join(dir, "node-"+id.IDs()+"-key.pem")
}

// ClientFiles returns the file names of an operator's client certificate.
func ClientFiles(dir, name string) (cert, key string) {
	return filepath.Join(dir, "client-"+name+".pem"), filepath.Join(dir, "client-"+name+"-key.pem")
}

// ErrExists means a file would be overwritten without force.
var ErrExists = errors.New("file exists")

// WriteKeyPair writes a certificate (mode 0644) and its key (0600), replacing
// each atomically. Without force it refuses to overwrite either file and
// writes neither.
func WriteKeyPair(certFile, keyFile string, certPEM, keyPEM []byte, force bool) error {
	if !force {
		for _, f := range []string{certFile, keyFile} {
			if _, err := os.Lstat(f); err == nil {
				return fmt.Errorf("%s: %w (pass --force to replace it)", f, ErrExists)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := WriteFileAtomic(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(certFile, certPEM, 0o644)
}

// WriteCA writes the CA's ca.pem and ca-key.pem into dir (created 0700).
func WriteCA(dir string, ca *CA, force bool) (certFile, keyFile string, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	keyPEM, err := encodeKey(ca.Key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	return certFile, keyFile, WriteKeyPair(certFile, keyFile, encodeCert(ca.Cert), keyPEM, force)
}

// LoadCA reads dir/ca.pem and dir/ca-key.pem.
func LoadCA(dir string) (*CA, error) {
	certFile, keyFile := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certs, err := readCerts(certFile)
	if err != nil {
		return nil, err
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("%s: holds %d certificates, want the one CA certificate", certFile, len(certs))
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, err
	}
	id, err := checkCA(certs[0], key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certFile, err)
	}
	return &CA{Cert: certs[0], Key: key, Identity: id}, nil
}

// CertPEM is the CA certificate, PEM-encoded.
func (ca *CA) CertPEM() []byte { return encodeCert(ca.Cert) }

// WriteFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so a reader (a node reloading on SIGHUP,
// a node restarting after a crash) never sees a half-written file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func encodeCert(cert *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// readCerts reads every CERTIFICATE block of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return certs, nil
}

// readKey reads an ECDSA private key (PKCS#8 "PRIVATE KEY" or SEC 1 "EC PRIVATE KEY").
func readKey(path string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM private key found", path)
		}
		switch block.Type {
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			ec, ok := k.(*ecdsa.PrivateKey)
			if !ok {
				return nil, fmt.Errorf("%s: the key is a %T, want ECDSA", path, k)
			}
			return ec, nil
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return k, nil
		}
	}
}
