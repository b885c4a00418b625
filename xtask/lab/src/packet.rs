//! Crafted frames (filled in by the packet-builder work).
