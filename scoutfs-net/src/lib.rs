//! scoutfs-net will carry the server/client messages of scoutfs-core between mounts over
//! TCP. It has no code yet: the messages it will carry arrive with the server and client
//! state machines (see the README's status section).
