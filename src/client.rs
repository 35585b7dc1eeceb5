//! How the retry flags become a policy and an HTTP client.

use backstop_core::Policy;
use backstop_http::Client;

use crate::cli::{BackoffArgs, RetryArgs};
use crate::report::Report;

impl BackoffArgs {
    /// `policy` with the flags applied.
    pub fn apply(&self, mut policy: Policy) -> Policy {
        if let Some(n) = self.attempts {
            policy = policy.with_max_attempts(n);
        }
        if let Some(d) = self.base_delay {
            policy = policy.with_initial_delay(d);
        }
        if let Some(d) = self.max_delay {
            policy = policy.with_max_delay(d);
        }
        if let Some(d) = self.max_wait {
            policy = policy.with_max_server_wait(d);
        }
        if let Some(d) = self.deadline {
            policy = policy.with_deadline(d);
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
            policy = policy.with_attempt_timeout((!d.is_zero()).then_some(d));
        }
        policy
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
