//! NBD client transport (fixed newstyle, structured replies, block status, multi-conn).
