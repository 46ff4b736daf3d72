//! What a `keyward.v1` call asks for, read off its message ([`Asked`]): the attributes its
//! operation is authorized with (the table of [`crate::access`]). A call refused before its
//! operation runs (its credential, or the impersonation it asks for) is recorded in the audit
//! log as that request, as kube-apiserver's audit filter records a refused request with what
//! its URL names, so that a policy that audits Secrets sees the refusals of Secret calls too.

use crate::access::verbs::{ENCRYPTION, MIGRATIONS, RAW};
use crate::access::{
    keyward_attributes, review_attributes, secret_attributes, token_request_attributes, SelfReview,
};
use crate::authn::Identity;
use crate::authz::{verbs as kverbs, Attributes};
use crate::pb::keyward_v1 as pb;

/// A call's message, described as the request it makes.
pub(super) trait Asked {
    /// The attributes of this call by `user`.
    fn asked(&self, user: Identity) -> Attributes;
}

/// The namespace and name of a Secret a message carries, if it carries one.
fn namespace_and_name(s: Option<&pb::Secret>) -> (&str, &str) {
    s.and_then(|s| s.metadata.as_ref())
        .map_or(("", ""), |m| (m.namespace.as_str(), m.name.as_str()))
}

impl Asked for pb::CreateRequest {
    fn asked(&self, user: Identity) -> Attributes {
        let (ns, _) = namespace_and_name(self.secret.as_ref());
        secret_attributes(user, kverbs::CREATE, ns, "")
    }
}

impl Asked for pb::GetRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::GET, &self.namespace, &self.name)
    }
}

impl Asked for pb::UpdateRequest {
    fn asked(&self, user: Identity) -> Attributes {
        let (ns, name) = namespace_and_name(self.secret.as_ref());
        secret_attributes(user, kverbs::UPDATE, ns, name)
    }
}

impl Asked for pb::DeleteRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::DELETE, &self.namespace, &self.name)
    }
}

impl Asked for pb::ListRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::LIST, &self.namespace, "")
    }
}

impl Asked for pb::WatchRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::WATCH, &self.namespace, "")
    }
}

impl Asked for pb::HistoryRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::GET, &self.namespace, &self.name)
    }
}

impl Asked for pb::RollbackRequest {
    fn asked(&self, user: Identity) -> Attributes {
        secret_attributes(user, kverbs::UPDATE, &self.namespace, &self.name)
    }
}

impl Asked for pb::RawGetRequest {
    fn asked(&self, user: Identity) -> Attributes {
        keyward_attributes(user, kverbs::GET, RAW, &self.key)
    }
}

impl Asked for pb::RawListRequest {
    fn asked(&self, user: Identity) -> Attributes {
        keyward_attributes(user, kverbs::LIST, RAW, "")
    }
}

impl Asked for pb::EncryptionStatusRequest {
    fn asked(&self, user: Identity) -> Attributes {
        keyward_attributes(user, kverbs::GET, ENCRYPTION, "")
    }
}

impl Asked for pb::MigrateRequest {
    fn asked(&self, user: Identity) -> Attributes {
        keyward_attributes(user, kverbs::CREATE, MIGRATIONS, "")
    }
}

impl Asked for pb::AccessReviewRequest {
    fn asked(&self, user: Identity) -> Attributes {
        review_attributes(user, SelfReview::Access)
    }
}

impl Asked for pb::RulesReviewRequest {
    fn asked(&self, user: Identity) -> Attributes {
        review_attributes(user, SelfReview::Rules)
    }
}

impl Asked for pb::WhoAmIRequest {
    fn asked(&self, user: Identity) -> Attributes {
        review_attributes(user, SelfReview::Subject)
    }
}

impl Asked for pb::CreateTokenRequest {
    fn asked(&self, user: Identity) -> Attributes {
        token_request_attributes(user, &self.namespace, &self.service_account)
    }
}
