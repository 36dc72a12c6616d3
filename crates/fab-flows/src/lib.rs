//! fab-flows: under construction (see the issues).
