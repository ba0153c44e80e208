package proxy

import (
	"encoding/binary"
	"fmt"
)

// SQLSTATE codes the proxy reports itself.
const (
	codeProtocolViolation            = "08P01"
	codeConnectionFailure            = "08006"
	codeUnableToConnect              = "08001"
	codeTransactionResolutionUnknown = "08007"
	codeSerializationFailure         = "40001"
	codeInFailedTransaction          = "25P02"
	codeReadOnlyTransaction          = "25006"
	codeQueryCanceled                = "57014"
	codeCrashShutdown                = "57P02"
	codeFeatureNotSupported          = "0A000"
	codeInvalidAuthSpec              = "28000"
	codeInvalidPassword              = "28P01"
	codeCannotConnectNow             = "57P03"
	codeAdminShutdown                = "57P01"
	codeInternalError                = "XX000"
	codeTooManyConnections           = "53300"
	codeInsufficientPrivilege        = "42501"
	severityFatal                    = "FATAL"
	severityError                    = "ERROR"
	maxClientErrorMessageLength      = 2000
)

// clientError is an error the proxy reports to the client as an ErrorResponse: FATAL before it
// closes the connection, or ERROR for a request it answers itself (the session goes on). Only
// Severity, Code, Message, Detail and Hint reach the client; cause is for logs.
type clientError struct {
	Severity string // "FATAL" for everything the proxy reports itself
	Code     string // SQLSTATE
	Message  string
	Detail   string
	Hint     string
	cause    error

	// raw, when set, is a complete ErrorResponse message received from the backend, sent to
	// the client unchanged instead of the fields above (transparency: the client sees exactly
	// what PostgreSQL said).
	raw []byte
}

// fatalf returns a FATAL clientError with the given SQLSTATE and message.
func fatalf(code, format string, args ...any) *clientError {
	return &clientError{Severity: severityFatal, Code: code, Message: fmt.Sprintf(format, args...)}
}

// errorf returns an ERROR clientError (the session goes on) with the given SQLSTATE and message.
func errorf(code, format string, args ...any) *clientError {
	return &clientError{Severity: severityError, Code: code, Message: fmt.Sprintf(format, args...)}
}

// withCause records the underlying error for logs and errors.Is/As.
func (e *clientError) withCause(err error) *clientError {
	e.cause = err
	return e
}

// withDetail sets the DETAIL field.
func (e *clientError) withDetail(detail string) *clientError {
	e.Detail = detail
	return e
}

// withHint sets the HINT field.
func (e *clientError) withHint(hint string) *clientError {
	e.Hint = hint
	return e
}

func (e *clientError) Error() string {
	msg := e.Message
	if e.raw != nil {
		msg = "error response from the PostgreSQL server"
	}
	if e.cause != nil {
		return fmt.Sprintf("%s %s: %s: %v", e.Severity, e.Code, msg, e.cause)
	}
	return fmt.Sprintf("%s %s: %s", e.Severity, e.Code, msg)
}

func (e *clientError) Unwrap() error { return e.cause }

// appendErrorResponse appends e as a complete ErrorResponse message (type 'E') to dst.
// It never fails: over-long text is truncated and NUL bytes are replaced, because the fields
// are NUL-terminated on the wire.
func (e *clientError) appendErrorResponse(dst []byte) []byte {
	if e.raw != nil {
		return append(dst, e.raw...)
	}
	start := len(dst)
	dst = append(dst, 'E', 0, 0, 0, 0)
	severity := e.Severity
	if severity == "" {
		severity = severityFatal
	}
	dst = appendErrorField(dst, 'S', severity)
	dst = appendErrorField(dst, 'V', severity)
	dst = appendErrorField(dst, 'C', e.Code)
	dst = appendErrorField(dst, 'M', e.Message)
	if e.Detail != "" {
		dst = appendErrorField(dst, 'D', e.Detail)
	}
	if e.Hint != "" {
		dst = appendErrorField(dst, 'H', e.Hint)
	}
	dst = append(dst, 0)
	binary.BigEndian.PutUint32(dst[start+1:], uint32(len(dst)-start-1))
	return dst
}

func appendErrorField(dst []byte, field byte, value string) []byte {
	if len(value) > maxClientErrorMessageLength {
		value = value[:maxClientErrorMessageLength]
	}
	dst = append(dst, field)
	for i := 0; i < len(value); i++ {
		c := value[i]
		if c == 0 {
			c = ' '
		}
		dst = append(dst, c)
	}
	return append(dst, 0)
}
