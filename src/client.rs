//! How the retry flags become a policy and an HTTP client.

use backstop_core::Policy;
use backstop_http::{Client, ClientBuilder};

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

    /// An HTTP client with the policy and the timeouts of the flags.
    pub fn client(&self) -> Result<Client, Report> {
        self.client_with(|b| b)
    }

    /// [`client`](Self::client), with more set by `more` (a CA bundle).
    pub fn client_with(
        &self,
        more: impl FnOnce(ClientBuilder) -> ClientBuilder,
    ) -> Result<Client, Report> {
        let mut builder = more(Client::builder().policy(self.policy()));
        if let Some(d) = self.connect_timeout {
            builder = builder.connect_timeout(d);
        }
        if let Some(d) = self.idle_timeout {
            builder = builder.header_timeout(d).read_idle_timeout(d);
        }
        Ok(builder.build()?)
    }
}
