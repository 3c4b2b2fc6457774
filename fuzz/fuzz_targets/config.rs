//! The agent's config file as `rewind agent` and `rewind dump` read it:
//! TOML, each `[[dump]]` table as a job (checked), its schedule (interval
//! or cron line, then the next run after a few instants), its durations;
//! and the upload limit syntax of `[server] limit_upload`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rewind_core::Timestamp;
use rewind_dumps::{Job, JobConfig, Schedule, parse_duration};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_duration(text);
    if let Ok(s) = Schedule::parse(text) {
        for now in [0, 1_795_700_000_000_000_000, i64::MAX / 2] {
            let _ = s.next_after(None, Timestamp(now));
            let _ = s.next_after(Some(Timestamp(now)), Timestamp(now));
        }
    }
    let Ok(table) = toml::from_str::<toml::Table>(text) else {
        return;
    };
    if let Some(toml::Value::Array(jobs)) = table.get("dump") {
        for j in jobs {
            if let Ok(cfg) = j.clone().try_into::<JobConfig>()
                && let Ok(job) = Job::new(cfg)
            {
                let _ = job.path();
                let _ = job.streams(&["a".into(), "b/c%".into()]);
            }
        }
    }
});
