//! The plan executor: runs every VM of a plan through its cold or warm pipeline.
