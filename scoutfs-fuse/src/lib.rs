//! scoutfs-fuse will adapt FUSE requests to the filesystem API of scoutfs-core. It has no
//! code yet: the filesystem layer it adapts does not exist yet (see the README's status
//! section).
