//! Outpost wire protocol.
