//! How the retry flags become a policy and an HTTP client.

use backstop_core::Policy;
use backstop_http::Client;
use backstop_transfer::AttemptTimeout;

use crate::cli::{BackoffArgs, RetryArgs};
use crate::report::Report;

impl BackoffArgs {
    /// `policy` with the flags applied.
    pub fn apply(&self, mut policy: Policy) -> Policy {
        if let Some(n) = self.attempts {
            policy = policy.max_attempts(n);
        }
        if let Some(d) = self.base_delay {
            policy = policy.initial_delay(d);
        }
        if let Some(d) = self.max_delay {
            policy = policy.max_delay(d);
        }
        if let Some(d) = self.max_wait {
            policy = policy.max_server_wait(d);
        }
        if let Some(d) = self.deadline {
            policy = policy.deadline(d);
        }
        policy
    }
}

impl RetryArgs {
    /// The API preset with the flags applied.
    pub fn policy(&self) -> Policy {
        self.apply(Policy::api())
    }

    /// `policy` with the flags applied.
    pub fn apply(&self, policy: Policy) -> Policy {
        let mut policy = self.backoff.apply(policy);
        if let Some(d) = self.attempt_timeout {
            policy = policy.attempt_timeout((!d.is_zero()).then_some(d));
        }
        policy
    }

    /// The per-attempt ceiling of a download: a runaway guard from the
    /// size unless `--attempt-timeout` says otherwise (0: none).
    pub fn transfer_attempt_timeout(&self) -> AttemptTimeout {
        match self.attempt_timeout {
            Some(t) => AttemptTimeout::Fixed((!t.is_zero()).then_some(t)),
            None => AttemptTimeout::BySize,
        }
    }

    /// An HTTP client with the policy and the timeouts of the flags.
    pub fn client(&self) -> Result<Client, Report> {
        let mut builder = Client::builder().policy(self.policy());
        if let Some(d) = self.connect_timeout {
            builder = builder.connect_timeout(d);
        }
        if let Some(d) = self.idle_timeout {
            builder = builder.header_timeout(d).read_idle_timeout(d);
        }
        Ok(builder.build()?)
    }
}
