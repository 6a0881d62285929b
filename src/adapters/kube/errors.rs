//! Which kube-rs errors mean "the cluster is unreachable or failing" (`ExecutorUnavailable`,
//! counted by the breaker) and which are answers (`Internal`: e.g. RBAC forbids us, which no
//! retry will fix).

use crate::domain::DomainError;

pub(super) fn kube_error(context: &str, error: kube::Error) -> DomainError {
    match &error {
        kube::Error::Api(status) if status.code >= 500 || status.code == 429 => {
            DomainError::executor_unavailable(format!("{context}: the Kubernetes API answered {}", status.code))
        }
        kube::Error::Api(_) => DomainError::internal(anyhow::Error::new(error).context(context.to_owned())),
        // Transport: refused, reset, timed out, TLS.
        _ => DomainError::executor_unavailable(format!("{context}: {error}")),
    }
}
