//! Slate's PID 1. Decides the stage from the filesystem and never returns:
//! an exiting PID 1 panics the kernel. See the crate docs of `slate_init`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use slate_init::shutdown::{self, Action};
use slate_init::{Stage, console, log, stage1, stage2};

fn main() {
    console::install_panic_hook();
    if std::process::id() != 1 {
        // Not PID 1: nothing here is safe to run on a live system.
        log!(
            "must run as PID 1 (this is pid {}); exiting",
            std::process::id()
        );
        std::process::exit(2);
    }
    match slate_init::detect_stage(Path::new(slate_init::ROOTFS_IMAGE)) {
        Stage::One => {
            let outcome =
                catch_unwind(AssertUnwindSafe(|| stage1::run(&stage1::Config::default())));
            match outcome {
                Ok(err) => log!("{}; powering off", console::chain(&err)),
                Err(_) => log!("stage 1 failed (see above); powering off"),
            }
            shutdown::halt(Action::PowerOff)
        }
        Stage::Two => {
            // stage2::run never returns; a panic outside its loop (in
            // setup or shutdown) still must not end PID 1.
            let _ = catch_unwind(AssertUnwindSafe(|| stage2::run(&stage2::Config::default())));
            log!("stage 2 failed (see above); powering off");
            shutdown::halt(Action::PowerOff)
        }
    }
}
