//! ricochet-server
