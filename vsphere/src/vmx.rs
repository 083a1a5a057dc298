//! Parser for VMware `.vmx` configuration files.
