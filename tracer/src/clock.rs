//! Kernel timestamps (`bpf_ktime_get_boot_ns`, CLOCK_BOOTTIME) to wall-clock
//! time, and RFC 3339 formatting without a date library.

use crate::timestamp::Timestamp;

/// Converts CLOCK_BOOTTIME nanoseconds to Unix-epoch nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime - boottime, in nanoseconds, as last sampled: at start and
    /// then once a second ([`Clock::resample`]), so a step of the wall
    /// clock (settimeofday, an NTP step) or NTP's slewing is followed.
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; the clock ids
    // used are always valid on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl Clock {
    pub fn new() -> Self {
        let boot = now_ns(libc::CLOCK_BOOTTIME);
        let real = now_ns(libc::CLOCK_REALTIME);
        Clock {
            offset_ns: real - boot,
        }
    }

    /// Samples the offset again (the event loop does it once a second).
    pub fn resample(&mut self) {
        *self = Clock::new();
    }

    /// A clock for tests: wall = boot + offset.
    #[cfg(test)]
    pub fn with_offset(offset_ns: i128) -> Self {
        Clock { offset_ns }
    }

    pub fn wall_ns(&self, boot_ns: u64) -> i128 {
        boot_ns as i128 + self.offset_ns
    }

    /// Boot-time nanoseconds now.
    pub fn boot_now() -> u64 {
        now_ns(libc::CLOCK_BOOTTIME) as u64
    }

    pub fn rfc3339(&self, boot_ns: u64) -> Timestamp {
        rfc3339(self.wall_ns(boot_ns))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    /// The `YYYY-MM-DDTHH:MM:SS.` of the last second formatted: events come
    /// in bursts within one second, so the calendar work is done once.
    static LAST_SECOND: std::cell::RefCell<(i64, String)> =
        const { std::cell::RefCell::new((i64::MIN, String::new())) };
}

/// `2026-11-25T20:31:02.123456789Z` for Unix-epoch nanoseconds.
pub fn rfc3339(epoch_ns: i128) -> Timestamp {
    // 64-bit arithmetic for every time until 2262 (128-bit division is a
    // library call).
    let (secs, nanos) = match i64::try_from(epoch_ns) {
        Ok(ns) => (
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        ),
        Err(_) => (
            epoch_ns.div_euclid(1_000_000_000) as i64,
            epoch_ns.rem_euclid(1_000_000_000) as u32,
        ),
    };
    LAST_SECOND.with(|cell| {
        let mut last = cell.borrow_mut();
        if last.0 != secs {
            let days = secs.div_euclid(86_400);
            let sod = secs.rem_euclid(86_400);
            let (y, m, d) = civil_from_days(days);
            last.1 = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
                sod / 3600,
                (sod / 60) % 60,
                sod % 60
            );
            last.0 = secs;
        }
        Timestamp::joined(&last.1, &nanos_z(nanos))
    })
}

/// `nanos` as nine digits and the `Z`: every event's timestamp ends with
/// it, and the formatting machinery cost more than the rest of the line's
/// time (perf, one line per reset).
fn nanos_z(nanos: u32) -> [u8; 10] {
    let mut tail = [b'Z'; 10];
    let mut n = nanos % 1_000_000_000;
    for d in tail[..9].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    tail
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        // 2026-11-25T20:31:02.5Z
        assert_eq!(
            rfc3339(1_795_638_662_500_000_000),
            "2026-11-25T20:31:02.500000000Z"
        );
        // Leap day.
        assert_eq!(
            rfc3339(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }

    /// Before 1970 and past 2262 (where nanoseconds leave 64 bits).
    #[test]
    fn formats_instants_far_from_now() {
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            rfc3339(-86_400_000_000_000 + 5),
            "1969-12-31T00:00:00.000000005Z"
        );
        let past_i64 = i128::from(i64::MAX) + 1;
        assert_eq!(rfc3339(past_i64), "2262-04-11T23:47:16.854775808Z");
        assert_eq!(rfc3339(past_i64 - 1), "2262-04-11T23:47:16.854775807Z");
        assert_eq!(
            rfc3339(253_402_300_800_000_000_000),
            "10000-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn cached_second_is_not_reused_for_another_second() {
        let t = 1_795_638_662_000_000_000i128;
        assert_eq!(rfc3339(t + 1), "2026-11-25T20:31:02.000000001Z");
        assert_eq!(rfc3339(t + 999_999_999), "2026-11-25T20:31:02.999999999Z");
        assert_eq!(rfc3339(t + 1_000_000_000), "2026-11-25T20:31:03.000000000Z");
        assert_eq!(rfc3339(t - 1), "2026-11-25T20:31:01.999999999Z");
        assert_eq!(rfc3339(t), "2026-11-25T20:31:02.000000000Z");
    }

    /// A clock whose offset is wrong (as after a step of the wall clock)
    /// tells the wall time again once resampled.
    #[test]
    fn resample_follows_the_wall_clock() {
        let real = now_ns(libc::CLOCK_REALTIME);
        let mut c = Clock::with_offset(-3_600_000_000_000);
        let off_by = |c: &Clock| (c.wall_ns(Clock::boot_now()) - real).abs();
        assert!(off_by(&c) > 3_000_000_000_000);
        c.resample();
        assert!(off_by(&c) < 1_000_000_000, "{}", off_by(&c));
    }

    #[test]
    fn boot_to_wall_adds_offset() {
        let c = Clock::with_offset(1_000);
        assert_eq!(c.wall_ns(5), 1_005);
    }
}
