//! ricochet-testbed
