//! fab-buffer: under construction (see the issues).
