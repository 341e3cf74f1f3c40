//! ricochet-engine
