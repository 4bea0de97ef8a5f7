//! Boot slots A and B: what each holds and which one boots next.
//!
//! Two records say it, and each has one writer at a time:
//! - GRUB's environment block on BOOT (`slate_good`, `slate_try`) is what
//!   the bootloader acts on. GRUB clears `slate_try` before it boots that
//!   slot, so a slot that panics, hangs or never reaches machined is booted
//!   once and then never again: the next boot is `slate_good`'s.
//! - META ([`super::meta`]) is Slate's account for people: version, state,
//!   since when and why.
//!
//! At every boot from disk, [`reconcile`] reads both with the slot GRUB
//! booted (`slate.slot=` on the kernel command line) and settles what
//! happened while nobody was looking: an interrupted write, a slot that was
//! tried and did not come back. The health gate ([`super::gate`]) then
//! turns a slot that is being tried into `good`, or `failed` and a reboot.

use super::meta::{Record, Slot, SlotState};

/// The kernel argument GRUB adds for the slot it booted.
pub const CMDLINE_KEY: &str = "slate.slot=";

/// The slot named on `cmdline`, if the node booted from its disk. The
/// last one counts: GRUB appends it after the bundle's own arguments.
pub fn booted(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .filter_map(|a| a.strip_prefix(CMDLINE_KEY))
        .next_back()
        .and_then(Slot::parse)
}

/// What GRUB's environment block says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootEnv {
    /// The slot to boot when nothing is being tried.
    pub good: Option<Slot>,
    /// The slot to boot once, at the next boot.
    pub try_once: Option<Slot>,
}

/// Settles `record` after a boot on `booted` (None: the node booted from
/// another medium); returns whether it changed. Safe to run again in the
/// same boot (machined restarted): a slot it moved to `trying` stays so.
pub fn reconcile(record: &mut Record, booted: Option<Slot>, env: &BootEnv, now: i64) -> bool {
    let mut changed = false;
    for (slot, r) in record.slots.iter_mut() {
        let on = booted.map_or("another medium".to_owned(), |b| format!("slot {b}"));
        let next = match r.state {
            SlotState::Writing => Some((
                SlotState::Failed,
                "the write was interrupted (the node restarted or lost power during the upgrade)"
                    .to_owned(),
            )),
            SlotState::Staged if booted == Some(*slot) => Some((
                SlotState::Trying,
                "booted once; waiting to be healthy".into(),
            )),
            // Not tried yet (`upgrade --stage`, or the reboot is pending).
            SlotState::Staged if env.try_once == Some(*slot) => None,
            SlotState::Staged => Some((
                SlotState::Failed,
                format!(
                    "did not come up when booted (kernel panic, init failure or hang before machined started); the node came back on {on}"
                ),
            )),
            SlotState::Trying if booted == Some(*slot) => None,
            SlotState::Trying => Some((
                SlotState::Failed,
                format!(
                    "restarted before it was healthy ({}s after booting it); the node came back on {on}",
                    now.saturating_sub(r.since)
                ),
            )),
            SlotState::Good | SlotState::Failed => None,
        };
        if let Some((state, reason)) = next {
            r.state = state;
            r.reason = reason;
            r.since = now;
            changed = true;
        }
    }
    changed
}

/// The slot the health gate must judge: the one booted, while it is tried.
pub fn on_trial(record: &Record, booted: Option<Slot>) -> Option<Slot> {
    let slot = booted?;
    (record.slots.get(&slot)?.state == SlotState::Trying).then_some(slot)
}

/// Where an upgrade writes: the slot not booted, once the booted one is
/// good (while it is on trial, the other slot is the only good one and
/// must not be overwritten); on a node that booted from another medium,
/// the one GRUB would not boot (by grubenv, whatever META says); on a disk
/// without a bootable slot, A.
pub fn target(record: &Record, booted: Option<Slot>, env: &BootEnv) -> Result<Slot, String> {
    if let Some(b) = booted {
        return match record.slots.get(&b).map(|r| r.state) {
            Some(SlotState::Good) => Ok(b.other()),
            Some(state) => Err(format!(
                "slot {b}, running, is {}: wait for its health gate to pass, or roll back, before upgrading again",
                state.name()
            )),
            None => Err(format!(
                "slot {b}, running, has no record in META: cannot tell which slot is safe to overwrite"
            )),
        };
    }
    Ok(env.good.map_or(Slot::A, Slot::other))
}

/// One row of `slatectl get bootslots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub slot: Slot,
    pub version: String,
    pub state: SlotState,
    pub since: i64,
    pub reason: String,
    /// The running system booted from it.
    pub active: bool,
    /// GRUB boots it next.
    pub next: bool,
}

pub fn views(record: &Record, booted: Option<Slot>, env: &BootEnv) -> Vec<SlotView> {
    let next = env.try_once.or(env.good);
    record
        .slots
        .iter()
        .map(|(slot, r)| SlotView {
            slot: *slot,
            version: r.version.clone(),
            state: r.state,
            since: r.since,
            reason: r.reason.clone(),
            active: booted == Some(*slot),
            next: next == Some(*slot),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::meta::SlotRecord;
    use super::*;

    fn record(slots: &[(Slot, SlotState)]) -> Record {
        Record {
            slots: slots
                .iter()
                .map(|(s, state)| {
                    (
                        *s,
                        SlotRecord {
                            version: format!("v-{s}"),
                            state: *state,
                            since: 100,
                            reason: String::new(),
                        },
                    )
                })
                .collect(),
            wipe: vec![],
        }
    }

    fn env(good: Option<Slot>, try_once: Option<Slot>) -> BootEnv {
        BootEnv { good, try_once }
    }

    #[test]
    fn the_slot_grub_booted_is_read_from_the_command_line() {
        assert_eq!(booted("console=ttyS0 slate.slot=B quiet"), Some(Slot::B));
        // GRUB's comes last, whatever the bundle's line said.
        assert_eq!(
            booted("slate.slot=A console=ttyS0 slate.slot=B"),
            Some(Slot::B)
        );
        assert_eq!(booted("console=ttyS0"), None);
        assert_eq!(booted("slate.slot=C"), None);
    }

    #[test]
    fn a_staged_slot_that_booted_is_on_trial_until_the_gate_says() {
        let mut r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Staged)]);
        assert!(reconcile(
            &mut r,
            Some(Slot::B),
            &env(Some(Slot::A), None),
            200
        ));
        assert_eq!(r.slots[&Slot::B].state, SlotState::Trying);
        assert_eq!(on_trial(&r, Some(Slot::B)), Some(Slot::B));
        // machined restarts in the same boot: nothing changes.
        assert!(!reconcile(
            &mut r,
            Some(Slot::B),
            &env(Some(Slot::A), None),
            210
        ));
        assert_eq!(r.slots[&Slot::A].state, SlotState::Good);
    }

    #[test]
    fn a_slot_that_never_reached_machined_is_failed_with_why() {
        // GRUB cleared slate_try and booted B; B panicked; GRUB booted A.
        let mut r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Staged)]);
        assert!(reconcile(
            &mut r,
            Some(Slot::A),
            &env(Some(Slot::A), None),
            300
        ));
        let b = &r.slots[&Slot::B];
        assert_eq!((b.state, b.since), (SlotState::Failed, 300));
        assert!(b.reason.contains("came back on slot A"), "{}", b.reason);
        assert_eq!(on_trial(&r, Some(Slot::A)), None);
    }

    #[test]
    fn a_staged_slot_not_yet_tried_waits() {
        let mut r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Staged)]);
        assert!(!reconcile(
            &mut r,
            Some(Slot::A),
            &env(Some(Slot::A), Some(Slot::B)),
            300
        ));
        assert_eq!(r.slots[&Slot::B].state, SlotState::Staged);
    }

    #[test]
    fn an_interrupted_write_and_a_trial_cut_short_are_failures() {
        let mut r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Writing)]);
        assert!(reconcile(
            &mut r,
            Some(Slot::A),
            &env(Some(Slot::A), None),
            300
        ));
        assert!(r.slots[&Slot::B].reason.contains("interrupted"));

        let mut r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Trying)]);
        assert!(reconcile(
            &mut r,
            Some(Slot::A),
            &env(Some(Slot::A), None),
            400
        ));
        let b = &r.slots[&Slot::B];
        assert_eq!(b.state, SlotState::Failed);
        assert!(b.reason.contains("300s"), "{}", b.reason);
    }

    #[test]
    fn upgrades_go_to_the_slot_not_booted() {
        let r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Good)]);
        assert_eq!(
            target(&r, Some(Slot::A), &env(Some(Slot::A), None)),
            Ok(Slot::B)
        );
        assert_eq!(
            target(&r, Some(Slot::B), &env(Some(Slot::B), None)),
            Ok(Slot::A)
        );
        // Booted from an ISO, with A the slot GRUB boots: B, even when
        // META is blank.
        assert_eq!(target(&r, None, &env(Some(Slot::A), None)), Ok(Slot::B));
        assert_eq!(
            target(&Record::default(), None, &env(Some(Slot::A), None)),
            Ok(Slot::B)
        );
        // Nothing bootable on the disk: A.
        assert_eq!(
            target(&Record::default(), None, &BootEnv::default()),
            Ok(Slot::A)
        );
    }

    #[test]
    fn a_slot_on_trial_is_not_upgraded_over_the_only_good_one() {
        let r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Trying)]);
        let err = target(&r, Some(Slot::B), &env(Some(Slot::A), None)).unwrap_err();
        assert!(err.contains("slot B, running, is trying"), "{err}");
        assert!(target(&Record::default(), Some(Slot::A), &BootEnv::default()).is_err());
    }

    #[test]
    fn views_say_which_slot_runs_and_which_boots_next() {
        let r = record(&[(Slot::A, SlotState::Good), (Slot::B, SlotState::Staged)]);
        let v = views(&r, Some(Slot::A), &env(Some(Slot::A), Some(Slot::B)));
        assert!(v[0].active && !v[0].next);
        assert!(!v[1].active && v[1].next);
    }
}
