//! The Many Well target (under construction).
