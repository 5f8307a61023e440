//! exec (being written)
