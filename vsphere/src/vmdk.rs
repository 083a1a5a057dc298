//! VMDK: descriptor parser, flat / sparse / streamOptimized readers, sparse writer.
