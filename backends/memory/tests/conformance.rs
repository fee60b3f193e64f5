//! The conformance suite against `MemoryMirror`: with every capability, and as a FAT-like medium.
briefcase_mirror::conformance!(full, briefcase_memory::MemoryMirror::new("full"));
briefcase_mirror::conformance!(
    fat_like,
    briefcase_memory::MemoryMirror::fat_like("fat-like")
);
