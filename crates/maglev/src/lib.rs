//! ricochet-maglev
