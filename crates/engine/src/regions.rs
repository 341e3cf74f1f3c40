//! First-fit allocation of Maglev table regions in the shared `MAGLEV` array.

/// A run of slots `[offset, offset + len)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Region {
    pub offset: u32,
    pub len: u32,
}

/// Free space of the array, kept sorted and coalesced.
#[derive(Clone, Debug)]
pub struct RegionAllocator {
    free: Vec<Region>,
}

impl RegionAllocator {
    pub fn new(total: u32) -> Self {
        RegionAllocator {
            free: if total > 0 {
                vec![Region {
                    offset: 0,
                    len: total,
                }]
            } else {
                vec![]
            },
        }
    }

    pub fn alloc(&mut self, len: u32) -> Option<Region> {
        let i = self.free.iter().position(|r| r.len >= len)?;
        let r = self.free[i];
        if r.len == len {
            self.free.remove(i);
        } else {
            self.free[i] = Region {
                offset: r.offset + len,
                len: r.len - len,
            };
        }
        Some(Region {
            offset: r.offset,
            len,
        })
    }

    /// Marks `region` as used (adopting a pinned table). False if not entirely free.
    pub fn reserve(&mut self, region: Region) -> bool {
        let end = region.offset + region.len;
        let Some(i) = self
            .free
            .iter()
            .position(|r| r.offset <= region.offset && r.offset + r.len >= end)
        else {
            return false;
        };
        let r = self.free.remove(i);
        if end < r.offset + r.len {
            self.free.insert(
                i,
                Region {
                    offset: end,
                    len: r.offset + r.len - end,
                },
            );
        }
        if region.offset > r.offset {
            self.free.insert(
                i,
                Region {
                    offset: r.offset,
                    len: region.offset - r.offset,
                },
            );
        }
        true
    }

    pub fn free(&mut self, region: Region) {
        let i = self.free.partition_point(|r| r.offset < region.offset);
        self.free.insert(i, region);
        // Coalesce with the neighbours.
        if i + 1 < self.free.len()
            && self.free[i].offset + self.free[i].len == self.free[i + 1].offset
        {
            self.free[i].len += self.free[i + 1].len;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].offset + self.free[i - 1].len == self.free[i].offset {
            self.free[i - 1].len += self.free[i].len;
            self.free.remove(i);
        }
    }

    pub fn free_slots(&self) -> u64 {
        self.free.iter().map(|r| r.len as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesce() {
        let mut a = RegionAllocator::new(100);
        let x = a.alloc(30).unwrap();
        let y = a.alloc(30).unwrap();
        let z = a.alloc(30).unwrap();
        assert_eq!((x.offset, y.offset, z.offset), (0, 30, 60));
        assert!(a.alloc(11).is_none());
        a.free(y);
        assert_eq!(a.alloc(30).unwrap().offset, 30, "first fit reuses the hole");
        a.free(Region {
            offset: 30,
            len: 30,
        });
        a.free(x);
        a.free(z);
        assert_eq!(a.free_slots(), 100);
        assert_eq!(
            a.alloc(100).unwrap().offset,
            0,
            "all coalesced back into one run"
        );
    }

    #[test]
    fn reserve_splits() {
        let mut a = RegionAllocator::new(100);
        assert!(a.reserve(Region {
            offset: 40,
            len: 20
        }));
        assert!(
            !a.reserve(Region {
                offset: 50,
                len: 20
            }),
            "overlaps a used region"
        );
        assert_eq!(a.alloc(40).unwrap().offset, 0);
        assert_eq!(a.alloc(40).unwrap().offset, 60);
        assert!(a.alloc(1).is_none());
    }
}
