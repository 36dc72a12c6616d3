//! fab-mcmc: under construction (see the issues).
