//! fab-train: under construction (see the issues).
