//! ricochet-config
