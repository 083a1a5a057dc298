//! Local raw files and block devices as block transports.
