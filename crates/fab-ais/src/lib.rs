//! fab-ais: under construction (see the issues).
