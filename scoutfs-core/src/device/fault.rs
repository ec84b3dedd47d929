//! A device that fails chosen operations.

use super::{BlockDevice, DeviceError, FaultOp, Result};
use parking_lot::Mutex;
use std::sync::Arc;

#[derive(Debug, Default)]
struct State {
    counts: [u64; 3],
    armed: [Option<u64>; 3],
    sticky: bool,
    failing: [bool; 3],
    fired: bool,
}

/// Wraps a device and fails the Nth read, write or flush (counting from when the fault is
/// armed), optionally every later one of that kind too. A failed operation does not reach
/// the inner device.
#[derive(Debug)]
pub struct FaultDevice {
    inner: Arc<dyn BlockDevice>,
    state: Mutex<State>,
}

fn idx(op: FaultOp) -> usize {
    match op {
        FaultOp::Read => 0,
        FaultOp::Write => 1,
        FaultOp::Flush => 2,
    }
}

impl FaultDevice {
    /// Wrap `inner`; no fault is armed.
    pub fn new(inner: Arc<dyn BlockDevice>) -> FaultDevice {
        FaultDevice {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// Fail the `n`th operation of kind `op` from now on (1 = the next one).
    pub fn fail_nth(&self, op: FaultOp, n: u64) {
        let mut s = self.state.lock();
        let i = idx(op);
        s.armed[i] = Some(s.counts[i] + n.max(1));
    }

    /// Whether a fault, once fired, keeps failing every later operation of its kind.
    pub fn sticky(&self, sticky: bool) {
        self.state.lock().sticky = sticky;
    }

    /// Disarm every fault and stop failing.
    pub fn disarm(&self) {
        let mut s = self.state.lock();
        s.armed = [None; 3];
        s.failing = [false; 3];
    }

    /// Operations seen so far: (reads, writes, flushes), failed ones included.
    pub fn counts(&self) -> (u64, u64, u64) {
        let s = self.state.lock();
        (s.counts[0], s.counts[1], s.counts[2])
    }

    /// Whether any fault has fired.
    pub fn fired(&self) -> bool {
        self.state.lock().fired
    }

    fn check(&self, op: FaultOp) -> Result<()> {
        let mut s = self.state.lock();
        let i = idx(op);
        s.counts[i] += 1;
        let nth = s.counts[i];
        if s.failing[i] || s.armed[i] == Some(nth) {
            s.armed[i] = None;
            s.failing[i] = s.sticky;
            s.fired = true;
            return Err(DeviceError::Injected { op, nth });
        }
        Ok(())
    }
}

impl BlockDevice for FaultDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.check(FaultOp::Read)?;
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.check(FaultOp::Write)?;
        self.inner.write_at(buf, offset)
    }

    fn flush(&self) -> Result<()> {
        self.check(FaultOp::Flush)?;
        self.inner.flush()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;

    #[test]
    fn nth_write_fails_and_does_not_reach_the_device() {
        let mem = Arc::new(MemDevice::new(4096));
        let dev = FaultDevice::new(mem.clone());
        dev.write_at(&[1], 0).unwrap();
        dev.fail_nth(FaultOp::Write, 2);
        dev.write_at(&[2], 1).unwrap();
        assert!(matches!(
            dev.write_at(&[3], 2),
            Err(DeviceError::Injected {
                op: FaultOp::Write,
                nth: 3
            })
        ));
        assert!(dev.fired());
        dev.write_at(&[4], 3).unwrap();
        assert_eq!(&mem.snapshot()[..4], &[1, 2, 0, 4]);
        assert_eq!(dev.counts(), (0, 4, 0));
        dev.flush().unwrap();
        let mut b = [0u8; 1];
        dev.read_at(&mut b, 0).unwrap();
        assert_eq!(dev.counts(), (1, 4, 1));
    }

    #[test]
    fn sticky_faults_keep_failing_until_disarmed() {
        let dev = FaultDevice::new(Arc::new(MemDevice::new(4096)));
        dev.sticky(true);
        dev.fail_nth(FaultOp::Flush, 1);
        assert!(dev.flush().is_err());
        assert!(dev.flush().is_err());
        dev.write_at(&[1], 0).unwrap();
        dev.disarm();
        dev.flush().unwrap();
        let mut b = [0u8; 1];
        dev.fail_nth(FaultOp::Read, 1);
        assert!(dev.read_at(&mut b, 0).is_err());
    }
}
