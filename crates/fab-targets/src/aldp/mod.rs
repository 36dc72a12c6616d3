//! Alanine dipeptide (under construction).
