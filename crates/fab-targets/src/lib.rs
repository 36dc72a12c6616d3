//! fab-targets: under construction (see the issues).
