//! HTTP(S) range reader transport.
