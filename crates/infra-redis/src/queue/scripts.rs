//! The queue's Lua scripts and the numbers they are given.

use domain::TierLimits;

use crate::script::LuaScript;

pub(super) static ENQUEUE: LuaScript = LuaScript::new(include_str!("../lua/enqueue.lua"));
pub(super) static LEASE: LuaScript = LuaScript::new(include_str!("../lua/lease.lua"));
pub(super) static HEARTBEAT: LuaScript = LuaScript::new(include_str!("../lua/heartbeat.lua"));
pub(super) static FINISH: LuaScript = LuaScript::new(include_str!("../lua/finish.lua"));
pub(super) static REMOVE: LuaScript = LuaScript::new(include_str!("../lua/remove.lua"));
pub(super) static EXPIRED: LuaScript = LuaScript::new(include_str!("../lua/expired.lua"));
pub(super) static DROP_EXPIRED: LuaScript = LuaScript::new(include_str!("../lua/drop_expired.lua"));
pub(super) static CONTAINS: LuaScript = LuaScript::new(include_str!("../lua/contains.lua"));

/// The part of a pending job's score its tier sets: `(1000 − priority_boost)·1e12`. The script adds a
/// counter, so a lower score (a higher boost) is served first and FIFO holds within a tier. Scores stay below
/// 2^53, where doubles (Redis scores, Lua numbers) are exact.
pub(super) fn tier_base_score(limits: TierLimits) -> u64 {
    u64::from(1000u32.saturating_sub(limits.priority_boost)) * 1_000_000_000_000
}

/// How long to wait before retrying a refused enqueue: two fifths of a minute per job over the cap, at least
/// one minute.
pub(super) fn retry_after_minutes(pending: u64, cap: u64) -> u32 {
    let over = pending.saturating_sub(cap) + 1;
    u32::try_from((over * 2 / 5).max(1)).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use domain::{Tier, TierTable};

    use super::*;

    #[test]
    fn higher_tiers_score_lower() {
        let t = TierTable::default();
        let score = |tier| tier_base_score(t.limits(tier));
        assert!(score(Tier::CtoScale) < score(Tier::Partner));
        assert!(score(Tier::Partner) < score(Tier::Bootstrapper));
        assert_eq!(score(Tier::Bootstrapper), 1_000_000_000_000_000);
        assert!(score(Tier::Bootstrapper) + 1_000_000 < 1 << 53);
    }

    #[test]
    fn retry_hint() {
        assert_eq!(retry_after_minutes(100, 100), 1);
        assert_eq!(retry_after_minutes(104, 100), 2);
        assert_eq!(retry_after_minutes(109, 100), 4);
    }
}
