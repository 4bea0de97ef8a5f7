//! What a service is doing, and what happened to it lately.

use std::collections::VecDeque;
use std::time::SystemTime;

/// Events kept per service.
pub const EVENTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its dependencies do not hold yet.
    Waiting,
    /// Its pre-start step runs.
    Preparing,
    /// The process runs (see [`Status::health`]).
    Running,
    /// It ended and is not restarted (exit 0 under `on-failure`, or
    /// `never`).
    Finished,
    /// It ended badly: a crash, a missing binary, a failed pre-start step;
    /// restarted after its backoff unless the policy says never.
    Failed,
    /// Stopped on request.
    Stopped,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting",
            Self::Preparing => "Preparing",
            Self::Running => "Running",
            Self::Finished => "Finished",
            Self::Failed => "Failed",
            Self::Stopped => "Stopped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub at: SystemTime,
    pub state: State,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    pub state: State,
    /// `None`: no health check, or none answered since the start.
    pub healthy: Option<bool>,
    pub has_health_check: bool,
    pub pid: Option<u32>,
    /// Starts after the first.
    pub restarts: u32,
    pub events: VecDeque<Event>,
}

impl Status {
    pub fn new(id: &str, has_health_check: bool) -> Self {
        Self {
            id: id.to_owned(),
            state: State::Waiting,
            healthy: None,
            has_health_check,
            pid: None,
            restarts: 0,
            events: VecDeque::new(),
        }
    }

    /// Moves to `state` and records why.
    pub fn record(&mut self, state: State, message: impl Into<String>) {
        let message = message.into();
        tracing::info!("service {}: {} ({message})", self.id, state.as_str());
        self.state = state;
        if self.events.len() == EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            at: SystemTime::now(),
            state,
            message,
        });
    }

    /// Running and, if it has a health check, healthy: what a dependent
    /// service waits for.
    pub fn is_up(&self) -> bool {
        self.state == State::Running && (!self.has_health_check || self.healthy == Some(true))
    }
}
