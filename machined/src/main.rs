//! machined: loads the machine config and (later) runs the node's services.
//! Started and restarted by init.

fn main() {
    slate_machinery::logging::init();
    slate_machined::run(&slate_machined::Paths::default());
}
