//! IAM and STS for nimbus.
//!
//! [`IamService`] holds users, their access keys, roles, customer managed
//! policies (with versions) and inline policies in memory, writes every
//! change through to the store (as JSON documents) before answering, and
//! offers the AWS managed policies Lambda users expect. It is also the
//! [`nimbus_auth::KeyStore`] requests are verified against: the root key,
//! users' active access keys, and temporary credentials from AssumeRole.
//!
//! Wire formats (the IAM/STS query protocol) live in `nimbus-api`; policy
//! evaluation in `nimbus-policy`.

mod managed;
mod sealed;
mod trust;

pub use sealed::SecretBox;
pub use trust::TrustedParty;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use nimbus_store::Store;
use serde::{Deserialize, Serialize};

/// An IAM error; variant names are IAM's error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    DeleteConflict(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    ServiceFailure(String),
}

impl IamError {
    /// The IAM error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoSuchEntity(_) => "NoSuchEntity",
            Self::EntityAlreadyExists(_) => "EntityAlreadyExists",
            Self::MalformedPolicyDocument(_) => "MalformedPolicyDocument",
            Self::DeleteConflict(_) => "DeleteConflict",
            Self::LimitExceeded(_) => "LimitExceeded",
            Self::InvalidInput(_) => "InvalidInput",
            Self::Validation(_) => "ValidationError",
            Self::AccessDenied(_) => "AccessDenied",
            Self::ServiceFailure(_) => "ServiceFailure",
        }
    }

    /// The HTTP status IAM uses for the code.
    pub fn status(&self) -> u16 {
        match self {
            Self::NoSuchEntity(_) => 404,
            Self::EntityAlreadyExists(_) | Self::DeleteConflict(_) | Self::LimitExceeded(_) => 409,
            Self::AccessDenied(_) => 403,
            Self::ServiceFailure(_) => 500,
            _ => 400,
        }
    }

    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("iam store: {e}");
        Self::ServiceFailure("An internal error occurred; see the nimbus server log".into())
    }
}

/// Result of an IAM operation.
pub type IamResult<T> = Result<T, IamError>;

/// An IAM user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub created: DateTime<Utc>,
    pub attached: BTreeSet<String>,
    pub inline: BTreeMap<String, String>,
}

/// An IAM role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub created: DateTime<Utc>,
    /// The trust policy (AssumeRolePolicyDocument), as given.
    pub trust_policy: String,
    pub description: String,
    pub max_session_s: u32,
    pub attached: BTreeSet<String>,
    pub inline: BTreeMap<String, String>,
}

/// One version of a managed policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyVersion {
    pub id: String,
    pub document: String,
    pub created: DateTime<Utc>,
}

/// A managed policy: a customer's, or one of AWS's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagedPolicy {
    pub name: String,
    pub id: String,
    pub arn: String,
    pub path: String,
    pub description: String,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
    pub default_version: String,
    pub versions: Vec<PolicyVersion>,
    /// Next version number (versions are never renumbered).
    pub next_version: u32,
    #[serde(skip)]
    pub aws_managed: bool,
}

impl ManagedPolicy {
    /// The default version's document.
    pub fn document(&self) -> &str {
        self.versions
            .iter()
            .find(|v| v.id == self.default_version)
            .map_or("{}", |v| v.document.as_str())
    }
}

/// An access key of a user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessKey {
    pub id: String,
    pub secret: String,
    pub user: String,
    pub active: bool,
    pub created: DateTime<Utc>,
}

/// Temporary credentials from AssumeRole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub access_key_id: String,
    pub secret: String,
    pub token: String,
    pub role_name: String,
    /// `arn:aws:sts::<account>:assumed-role/<role>/<session>`
    pub assumed_role_arn: String,
    pub assumed_role_id: String,
    pub expires: DateTime<Utc>,
}

/// Who is calling, resolved from a verified access key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Root,
    User(String),
    /// A role session: role name and session ARN.
    AssumedRole {
        role: String,
        session_arn: String,
    },
}

/// A user or a role: the two kinds of entity policies attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityKind {
    User,
    Role,
}

impl EntityKind {
    fn noun(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Role => "role",
        }
    }
}

#[derive(Default)]
struct State {
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    policies: BTreeMap<String, ManagedPolicy>,
    keys: HashMap<String, AccessKey>,
    sessions: HashMap<String, Session>,
}

const NS_USER: &str = "iam.user";
const NS_ROLE: &str = "iam.role";
const NS_POLICY: &str = "iam.policy";
const NS_KEY: &str = "iam.key";
const NS_SESSION: &str = "sts.session";

/// Most access keys a user may have, as in IAM.
const KEYS_PER_USER: usize = 2;
/// Most versions a managed policy keeps, as in IAM.
const VERSIONS_PER_POLICY: usize = 5;

/// IAM users, roles, policies and keys, plus STS sessions.
pub struct IamService {
    account_id: String,
    root_key_id: String,
    root_secret: String,
    store: Arc<dyn Store>,
    state: RwLock<State>,
    /// Seals secrets before they are stored.
    sealer: SecretBox,
    /// Compiled policies by document text.
    compiled: RwLock<HashMap<String, Arc<nimbus_policy::Policy>>>,
}

impl std::fmt::Debug for IamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamService")
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut b = vec![0u8; len];
    // The OS random source only fails on a broken system; ids would then
    // collide, which the callers detect as EntityAlreadyExists.
    let _ = getrandom::fill(&mut b);
    format!(
        "{prefix}{}",
        b.iter()
            .map(|x| ALPHABET[usize::from(*x) % 32] as char)
            .collect::<String>()
    )
}

/// A secret access key: 40 characters of base64 alphabet, as AWS's.
pub fn random_secret() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 30];
    let _ = getrandom::fill(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn check_name(kind: &str, name: &str, max: usize) -> IamResult<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{name}' at '{kind}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length less than or equal to {max}"
        )))
    }
}

fn check_path(path: &str) -> IamResult<()> {
    if path.starts_with('/') && path.ends_with('/') && path.len() <= 512 {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for path is invalid. It must begin and end with / and contain only alphanumeric characters and/or / characters. Got '{path}'"
        )))
    }
}

/// A user or role can be deleted only once its policies are gone, as in IAM.
fn no_policies_left(
    attached: &BTreeSet<String>,
    inline: &BTreeMap<String, String>,
) -> IamResult<()> {
    if !attached.is_empty() {
        return Err(IamError::DeleteConflict(
            "Cannot delete entity, must detach all policies first.".into(),
        ));
    }
    if !inline.is_empty() {
        return Err(IamError::DeleteConflict(
            "Cannot delete entity, must delete policies first.".into(),
        ));
    }
    Ok(())
}

/// Checks an identity-based policy document as IAM does, with its
/// `MalformedPolicyDocument` messages.
pub fn validate_document(doc: &str) -> IamResult<()> {
    if doc.len() > 10_240 {
        return Err(IamError::LimitExceeded(
            "Cannot exceed quota for PolicySize: 10240".into(),
        ));
    }
    nimbus_policy::Policy::parse_identity(doc)
        .map(|_| ())
        .map_err(|e| IamError::MalformedPolicyDocument(e.to_string()))
}

/// Checks a trust policy (which names principals, not resources).
fn validate_trust(doc: &str) -> IamResult<()> {
    nimbus_policy::Policy::parse(doc)
        .map(|_| ())
        .map_err(|e| IamError::MalformedPolicyDocument(e.to_string()))
}

impl IamService {
    /// Loads IAM state from the store. `root_*` is the account's root key.
    pub fn open(
        account_id: &str,
        root_key_id: &str,
        root_secret: &str,
        store: Arc<dyn Store>,
        sealing_key: &[u8; 32],
    ) -> IamResult<Self> {
        let sealer = SecretBox::new(sealing_key);
        let unseal = |v: &str| sealer.open(v).map_err(IamError::internal);
        let mut state = State::default();
        let load = |ns: &str| store.list_docs(ns).map_err(IamError::internal);
        for (_, doc) in load(NS_USER)? {
            let u: User = serde_json::from_str(&doc).map_err(IamError::internal)?;
            state.users.insert(u.name.clone(), u);
        }
        for (_, doc) in load(NS_ROLE)? {
            let r: Role = serde_json::from_str(&doc).map_err(IamError::internal)?;
            state.roles.insert(r.name.clone(), r);
        }
        for (_, doc) in load(NS_POLICY)? {
            let p: ManagedPolicy = serde_json::from_str(&doc).map_err(IamError::internal)?;
            state.policies.insert(p.arn.clone(), p);
        }
        for (_, doc) in load(NS_KEY)? {
            let mut k: AccessKey = serde_json::from_str(&doc).map_err(IamError::internal)?;
            k.secret = unseal(&k.secret)?;
            state.keys.insert(k.id.clone(), k);
        }
        let now = Utc::now();
        for (key, doc) in load(NS_SESSION)? {
            let mut s: Session = serde_json::from_str(&doc).map_err(IamError::internal)?;
            s.secret = unseal(&s.secret)?;
            s.token = unseal(&s.token)?;
            if s.expires > now {
                state.sessions.insert(s.access_key_id.clone(), s);
            } else {
                store
                    .delete_doc(NS_SESSION, &key)
                    .map_err(IamError::internal)?;
            }
        }
        let epoch = DateTime::<Utc>::from_timestamp(1_420_070_400, 0).unwrap_or_else(Utc::now);
        for (name, path, description, doc) in managed::AWS_MANAGED {
            let arn = format!("arn:aws:iam::aws:policy{path}{name}");
            state.policies.insert(
                arn.clone(),
                ManagedPolicy {
                    name: (*name).into(),
                    id: format!(
                        "ANPA{}",
                        name.to_uppercase()
                            .chars()
                            .filter(char::is_ascii_alphanumeric)
                            .take(17)
                            .collect::<String>()
                    ),
                    arn,
                    path: (*path).into(),
                    description: (*description).into(),
                    created: epoch,
                    updated: epoch,
                    default_version: "v1".into(),
                    versions: vec![PolicyVersion {
                        id: "v1".into(),
                        document: (*doc).into(),
                        created: epoch,
                    }],
                    next_version: 2,
                    aws_managed: true,
                },
            );
        }
        Ok(Self {
            account_id: account_id.into(),
            root_key_id: root_key_id.into(),
            root_secret: root_secret.into(),
            store,
            state: RwLock::new(state),
            sealer,
            compiled: RwLock::new(HashMap::new()),
        })
    }

    /// The account every ARN names.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn sealed_key(&self, key: &AccessKey) -> AccessKey {
        AccessKey {
            secret: self.sealer.seal(&key.secret),
            ..key.clone()
        }
    }

    fn persist<T: Serialize>(&self, ns: &str, key: &str, value: &T) -> IamResult<()> {
        let doc = serde_json::to_string(value).map_err(IamError::internal)?;
        self.store
            .put_doc(ns, key, &doc)
            .map_err(IamError::internal)
    }

    fn unpersist(&self, ns: &str, key: &str) -> IamResult<()> {
        self.store
            .delete_doc(ns, key)
            .map(|_| ())
            .map_err(IamError::internal)
    }

    // ---- callers ----

    /// Who an access key belongs to, and its ARN (for GetCallerIdentity
    /// and policy checks); `None` if unknown.
    pub fn caller(&self, access_key_id: &str) -> Option<(Caller, String)> {
        if access_key_id == self.root_key_id {
            return Some((
                Caller::Root,
                format!("arn:aws:iam::{}:root", self.account_id),
            ));
        }
        let st = self.read();
        if let Some(k) = st.keys.get(access_key_id) {
            let arn = st.users.get(&k.user).map(|u| u.arn.clone())?;
            return Some((Caller::User(k.user.clone()), arn));
        }
        st.sessions.get(access_key_id).map(|s| {
            (
                Caller::AssumedRole {
                    role: s.role_name.clone(),
                    session_arn: s.assumed_role_arn.clone(),
                },
                s.assumed_role_arn.clone(),
            )
        })
    }

    /// Whether an access key is the account's root key.
    pub fn is_root(&self, access_key_id: &str) -> bool {
        access_key_id == self.root_key_id
    }

    /// The unique id AWS shows for a caller (GetCallerIdentity's UserId).
    pub fn caller_user_id(&self, caller: &Caller, access_key_id: &str) -> String {
        let st = self.read();
        match caller {
            Caller::Root => self.account_id.clone(),
            Caller::User(name) => st.users.get(name).map(|u| u.id.clone()).unwrap_or_default(),
            Caller::AssumedRole { .. } => st
                .sessions
                .get(access_key_id)
                .map(|s| s.assumed_role_id.clone())
                .unwrap_or_default(),
        }
    }

    /// Every policy document that applies to a caller: attached managed
    /// policies' default versions and inline policies (none for root).
    pub fn identity_policies(&self, caller: &Caller) -> Vec<String> {
        let st = self.read();
        let (attached, inline) = match caller {
            Caller::Root => return Vec::new(),
            Caller::User(n) => match st.users.get(n) {
                Some(u) => (&u.attached, &u.inline),
                None => return Vec::new(),
            },
            Caller::AssumedRole { role, .. } => match st.roles.get(role) {
                Some(r) => (&r.attached, &r.inline),
                None => return Vec::new(),
            },
        };
        attached
            .iter()
            .filter_map(|arn| st.policies.get(arn).map(|p| p.document().to_string()))
            .chain(inline.values().cloned())
            .collect()
    }

    // ---- users and keys ----

    pub fn create_user(&self, name: &str, path: Option<&str>) -> IamResult<User> {
        check_name("userName", name, 64)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        let mut st = self.write();
        if st.users.keys().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(IamError::EntityAlreadyExists(format!(
                "User with name {name} already exists."
            )));
        }
        let user = User {
            name: name.into(),
            id: random_id("AIDA", 17),
            arn: format!("arn:aws:iam::{}:user{path}{name}", self.account_id),
            path: path.into(),
            created: Utc::now(),
            attached: BTreeSet::new(),
            inline: BTreeMap::new(),
        };
        self.persist(NS_USER, name, &user)?;
        st.users.insert(name.into(), user.clone());
        Ok(user)
    }

    fn no_user(name: &str) -> IamError {
        IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
    }

    pub fn get_user(&self, name: &str) -> IamResult<User> {
        self.read()
            .users
            .get(name)
            .cloned()
            .ok_or_else(|| Self::no_user(name))
    }

    pub fn list_users(&self, path_prefix: Option<&str>) -> Vec<User> {
        let prefix = path_prefix.unwrap_or("/");
        self.read()
            .users
            .values()
            .filter(|u| u.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn delete_user(&self, name: &str) -> IamResult<()> {
        let mut st = self.write();
        let user = st.users.get(name).ok_or_else(|| Self::no_user(name))?;
        if st.keys.values().any(|k| k.user == name) {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete access keys first.".into(),
            ));
        }
        no_policies_left(&user.attached, &user.inline)?;
        self.unpersist(NS_USER, name)?;
        st.users.remove(name);
        Ok(())
    }

    pub fn create_access_key(&self, user: &str) -> IamResult<AccessKey> {
        let mut st = self.write();
        if !st.users.contains_key(user) {
            return Err(Self::no_user(user));
        }
        if st.keys.values().filter(|k| k.user == user).count() >= KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {KEYS_PER_USER}"
            )));
        }
        let key = AccessKey {
            id: random_id("AKIA", 16),
            secret: random_secret(),
            user: user.into(),
            active: true,
            created: Utc::now(),
        };
        self.persist(NS_KEY, &key.id, &self.sealed_key(&key))?;
        st.keys.insert(key.id.clone(), key.clone());
        Ok(key)
    }

    fn no_key(id: &str) -> IamError {
        IamError::NoSuchEntity(format!("The Access Key with id {id} cannot be found."))
    }

    pub fn delete_access_key(&self, user: &str, id: &str) -> IamResult<()> {
        let mut st = self.write();
        match st.keys.get(id) {
            Some(k) if k.user == user => {}
            _ => return Err(Self::no_key(id)),
        }
        self.unpersist(NS_KEY, id)?;
        st.keys.remove(id);
        Ok(())
    }

    pub fn update_access_key(&self, user: &str, id: &str, active: bool) -> IamResult<()> {
        let mut st = self.write();
        let mut key = match st.keys.get(id) {
            Some(k) if k.user == user => k.clone(),
            _ => return Err(Self::no_key(id)),
        };
        key.active = active;
        self.persist(NS_KEY, id, &self.sealed_key(&key))?;
        st.keys.insert(id.into(), key);
        Ok(())
    }

    pub fn list_access_keys(&self, user: &str) -> IamResult<Vec<AccessKey>> {
        let st = self.read();
        if !st.users.contains_key(user) {
            return Err(Self::no_user(user));
        }
        let mut keys: Vec<AccessKey> = st
            .keys
            .values()
            .filter(|k| k.user == user)
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.created);
        Ok(keys)
    }

    // ---- roles ----

    fn no_role(name: &str) -> IamError {
        IamError::NoSuchEntity(format!("The role with name {name} cannot be found."))
    }

    pub fn create_role(
        &self,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<&str>,
        max_session_s: Option<u32>,
    ) -> IamResult<Role> {
        check_name("roleName", name, 64)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        validate_trust(trust_policy)?;
        let max_session_s = max_session_s.unwrap_or(3600);
        if !(3600..=43_200).contains(&max_session_s) {
            return Err(IamError::Validation(format!(
                "1 validation error detected: Value '{max_session_s}' at 'maxSessionDuration' failed to satisfy constraint: Member must have value between 3600 and 43200"
            )));
        }
        let mut st = self.write();
        if st.roles.keys().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(IamError::EntityAlreadyExists(format!(
                "Role with name {name} already exists."
            )));
        }
        let role = Role {
            name: name.into(),
            id: random_id("AROA", 17),
            arn: format!("arn:aws:iam::{}:role{path}{name}", self.account_id),
            path: path.into(),
            created: Utc::now(),
            trust_policy: trust_policy.into(),
            description: description.unwrap_or_default().into(),
            max_session_s,
            attached: BTreeSet::new(),
            inline: BTreeMap::new(),
        };
        self.persist(NS_ROLE, name, &role)?;
        st.roles.insert(name.into(), role.clone());
        Ok(role)
    }

    pub fn get_role(&self, name: &str) -> IamResult<Role> {
        self.read()
            .roles
            .get(name)
            .cloned()
            .ok_or_else(|| Self::no_role(name))
    }

    /// The role an ARN names, if it exists in this account.
    pub fn role_by_arn(&self, arn: &str) -> Option<Role> {
        self.read().roles.values().find(|r| r.arn == arn).cloned()
    }

    pub fn list_roles(&self, path_prefix: Option<&str>) -> Vec<Role> {
        let prefix = path_prefix.unwrap_or("/");
        self.read()
            .roles
            .values()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    pub fn delete_role(&self, name: &str) -> IamResult<()> {
        let mut st = self.write();
        let role = st.roles.get(name).ok_or_else(|| Self::no_role(name))?;
        no_policies_left(&role.attached, &role.inline)?;
        self.unpersist(NS_ROLE, name)?;
        st.roles.remove(name);
        Ok(())
    }

    pub fn update_assume_role_policy(&self, name: &str, doc: &str) -> IamResult<()> {
        validate_trust(doc)?;
        let mut st = self.write();
        let mut role = st
            .roles
            .get(name)
            .cloned()
            .ok_or_else(|| Self::no_role(name))?;
        role.trust_policy = doc.into();
        self.persist(NS_ROLE, name, &role)?;
        st.roles.insert(name.into(), role);
        Ok(())
    }

    // ---- managed policies ----

    fn no_policy(arn: &str) -> IamError {
        IamError::NoSuchEntity(format!("Policy {arn} does not exist or is not attachable."))
    }

    pub fn create_policy(
        &self,
        name: &str,
        path: Option<&str>,
        doc: &str,
        description: Option<&str>,
    ) -> IamResult<ManagedPolicy> {
        check_name("policyName", name, 128)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        validate_document(doc)?;
        let arn = format!("arn:aws:iam::{}:policy{path}{name}", self.account_id);
        let mut st = self.write();
        if st
            .policies
            .values()
            .any(|p| !p.aws_managed && p.name == name)
        {
            return Err(IamError::EntityAlreadyExists(format!(
                "A policy called {name} already exists. Duplicate names are not allowed."
            )));
        }
        let now = Utc::now();
        let policy = ManagedPolicy {
            name: name.into(),
            id: random_id("ANPA", 17),
            arn: arn.clone(),
            path: path.into(),
            description: description.unwrap_or_default().into(),
            created: now,
            updated: now,
            default_version: "v1".into(),
            versions: vec![PolicyVersion {
                id: "v1".into(),
                document: doc.into(),
                created: now,
            }],
            next_version: 2,
            aws_managed: false,
        };
        self.persist(NS_POLICY, &arn, &policy)?;
        st.policies.insert(arn, policy.clone());
        Ok(policy)
    }

    pub fn get_policy(&self, arn: &str) -> IamResult<ManagedPolicy> {
        self.read()
            .policies
            .get(arn)
            .cloned()
            .ok_or_else(|| Self::no_policy(arn))
    }

    /// How many users and roles a policy is attached to.
    pub fn attachment_count(&self, arn: &str) -> usize {
        let st = self.read();
        st.users
            .values()
            .filter(|u| u.attached.contains(arn))
            .count()
            + st.roles
                .values()
                .filter(|r| r.attached.contains(arn))
                .count()
    }

    /// ListPolicies: `scope` is `All`, `AWS` or `Local`.
    pub fn list_policies(
        &self,
        scope: &str,
        only_attached: bool,
        path_prefix: Option<&str>,
    ) -> Vec<ManagedPolicy> {
        let prefix = path_prefix.unwrap_or("/");
        let all: Vec<ManagedPolicy> = self
            .read()
            .policies
            .values()
            .filter(|p| match scope {
                "AWS" => p.aws_managed,
                "Local" => !p.aws_managed,
                _ => true,
            })
            .filter(|p| p.path.starts_with(prefix))
            .cloned()
            .collect();
        all.into_iter()
            .filter(|p| !only_attached || self.attachment_count(&p.arn) > 0)
            .collect()
    }

    pub fn create_policy_version(
        &self,
        arn: &str,
        doc: &str,
        set_default: bool,
    ) -> IamResult<PolicyVersion> {
        validate_document(doc)?;
        let mut st = self.write();
        let mut policy = st
            .policies
            .get(arn)
            .cloned()
            .ok_or_else(|| Self::no_policy(arn))?;
        if policy.aws_managed {
            return Err(IamError::InvalidInput(
                "AWS managed policies cannot be changed.".into(),
            ));
        }
        if policy.versions.len() >= VERSIONS_PER_POLICY {
            return Err(IamError::LimitExceeded(format!(
                "A managed policy can have up to {VERSIONS_PER_POLICY} versions. Before you create a new version, you must delete an existing version."
            )));
        }
        let version = PolicyVersion {
            id: format!("v{}", policy.next_version),
            document: doc.into(),
            created: Utc::now(),
        };
        policy.next_version += 1;
        policy.versions.push(version.clone());
        policy.updated = version.created;
        if set_default {
            policy.default_version = version.id.clone();
        }
        self.persist(NS_POLICY, arn, &policy)?;
        st.policies.insert(arn.into(), policy);
        Ok(version)
    }

    pub fn get_policy_version(&self, arn: &str, version: &str) -> IamResult<(PolicyVersion, bool)> {
        let policy = self.get_policy(arn)?;
        let is_default = policy.default_version == version;
        policy
            .versions
            .into_iter()
            .find(|v| v.id == version)
            .map(|v| (v, is_default))
            .ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "Policy {arn} version {version} does not exist or is not attachable."
                ))
            })
    }

    pub fn delete_policy_version(&self, arn: &str, version: &str) -> IamResult<()> {
        let mut st = self.write();
        let mut policy = st
            .policies
            .get(arn)
            .cloned()
            .ok_or_else(|| Self::no_policy(arn))?;
        if policy.default_version == version {
            return Err(IamError::DeleteConflict(
                "Cannot delete the default version of a policy.".into(),
            ));
        }
        let before = policy.versions.len();
        policy.versions.retain(|v| v.id != version);
        if policy.versions.len() == before {
            return Err(IamError::NoSuchEntity(format!(
                "Policy {arn} version {version} does not exist."
            )));
        }
        self.persist(NS_POLICY, arn, &policy)?;
        st.policies.insert(arn.into(), policy);
        Ok(())
    }

    pub fn delete_policy(&self, arn: &str) -> IamResult<()> {
        let attached = self.attachment_count(arn);
        let mut st = self.write();
        let policy = st.policies.get(arn).ok_or_else(|| Self::no_policy(arn))?;
        if policy.aws_managed {
            return Err(IamError::InvalidInput(
                "AWS managed policies cannot be deleted.".into(),
            ));
        }
        if attached > 0 {
            return Err(IamError::DeleteConflict(
                "Cannot delete a policy attached to entities.".into(),
            ));
        }
        self.unpersist(NS_POLICY, arn)?;
        st.policies.remove(arn);
        Ok(())
    }

    // ---- attachments and inline policies, for users and roles alike ----

    fn update_entity(
        &self,
        kind: EntityKind,
        name: &str,
        f: impl FnOnce(&mut BTreeSet<String>, &mut BTreeMap<String, String>, &State) -> IamResult<()>,
    ) -> IamResult<()> {
        let mut st = self.write();
        match kind {
            EntityKind::User => {
                let mut u = st
                    .users
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Self::no_user(name))?;
                f(&mut u.attached, &mut u.inline, &st)?;
                self.persist(NS_USER, name, &u)?;
                st.users.insert(name.into(), u);
            }
            EntityKind::Role => {
                let mut r = st
                    .roles
                    .get(name)
                    .cloned()
                    .ok_or_else(|| Self::no_role(name))?;
                f(&mut r.attached, &mut r.inline, &st)?;
                self.persist(NS_ROLE, name, &r)?;
                st.roles.insert(name.into(), r);
            }
        }
        Ok(())
    }

    fn entity_policies(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> IamResult<(BTreeSet<String>, BTreeMap<String, String>)> {
        let st = self.read();
        match kind {
            EntityKind::User => st
                .users
                .get(name)
                .map(|u| (u.attached.clone(), u.inline.clone()))
                .ok_or_else(|| Self::no_user(name)),
            EntityKind::Role => st
                .roles
                .get(name)
                .map(|r| (r.attached.clone(), r.inline.clone()))
                .ok_or_else(|| Self::no_role(name)),
        }
    }

    pub fn attach_policy(&self, kind: EntityKind, name: &str, arn: &str) -> IamResult<()> {
        self.update_entity(kind, name, |attached, _, st| {
            if !st.policies.contains_key(arn) {
                return Err(Self::no_policy(arn));
            }
            if attached.len() >= 20 && !attached.contains(arn) {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for PoliciesPer{}: 20",
                    if kind == EntityKind::User {
                        "User"
                    } else {
                        "Role"
                    }
                )));
            }
            attached.insert(arn.into());
            Ok(())
        })
    }

    pub fn detach_policy(&self, kind: EntityKind, name: &str, arn: &str) -> IamResult<()> {
        self.update_entity(kind, name, |attached, _, _| {
            if attached.remove(arn) {
                Ok(())
            } else {
                Err(IamError::NoSuchEntity(format!(
                    "Policy {arn} was not found."
                )))
            }
        })
    }

    /// The managed policies attached to a user or role, as (name, arn).
    pub fn attached_policies(
        &self,
        kind: EntityKind,
        name: &str,
    ) -> IamResult<Vec<(String, String)>> {
        let (attached, _) = self.entity_policies(kind, name)?;
        let st = self.read();
        Ok(attached
            .iter()
            .filter_map(|arn| st.policies.get(arn).map(|p| (p.name.clone(), arn.clone())))
            .collect())
    }

    pub fn put_inline_policy(
        &self,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
        doc: &str,
    ) -> IamResult<()> {
        check_name("policyName", policy_name, 128)?;
        validate_document(doc)?;
        self.update_entity(kind, name, |_, inline, _| {
            inline.insert(policy_name.into(), doc.into());
            Ok(())
        })
    }

    pub fn get_inline_policy(
        &self,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
    ) -> IamResult<String> {
        let (_, inline) = self.entity_policies(kind, name)?;
        inline.get(policy_name).cloned().ok_or_else(|| {
            IamError::NoSuchEntity(format!(
                "The {} policy with name {policy_name} cannot be found.",
                kind.noun()
            ))
        })
    }

    pub fn delete_inline_policy(
        &self,
        kind: EntityKind,
        name: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        self.update_entity(kind, name, |_, inline, _| {
            inline.remove(policy_name).map(|_| ()).ok_or_else(|| {
                IamError::NoSuchEntity(format!(
                    "The {} policy with name {policy_name} cannot be found.",
                    kind.noun()
                ))
            })
        })
    }

    pub fn inline_policy_names(&self, kind: EntityKind, name: &str) -> IamResult<Vec<String>> {
        Ok(self.entity_policies(kind, name)?.1.into_keys().collect())
    }

    // ---- authorisation ----

    /// A policy compiled once per distinct document text.
    fn compiled(&self, doc: &str) -> Option<Arc<nimbus_policy::Policy>> {
        if let Some(p) = self
            .compiled
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(doc)
        {
            return Some(p.clone());
        }
        let p = Arc::new(nimbus_policy::Policy::parse(doc).ok()?);
        let mut cache = self.compiled.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(doc.to_string(), p.clone());
        Some(p)
    }

    /// Whether the principal of `access_key_id` may perform `action` on
    /// `resource`: the root always may; users and role sessions as their
    /// identity policies decide (IAM's logic: explicit deny, then allow,
    /// else implicit deny). `Err` carries AWS's AccessDenied message.
    pub fn authorize(
        &self,
        access_key_id: &str,
        action: &str,
        resource: &str,
        resource_policy: Option<&str>,
        context: &nimbus_policy::Context,
    ) -> Result<(), String> {
        let Some((caller, arn)) = self.caller(access_key_id) else {
            return Err(format!(
                "The security token included in the request is invalid: {access_key_id}"
            ));
        };
        if caller == Caller::Root {
            return Ok(());
        }
        self.evaluate_for(&caller, &arn, action, resource, resource_policy, context)
    }

    /// [`Self::authorize`] for a caller already resolved, e.g. a function's
    /// execution role (`Caller::AssumedRole`).
    pub fn authorize_caller(
        &self,
        caller: &Caller,
        arn: &str,
        action: &str,
        resource: &str,
        context: &nimbus_policy::Context,
    ) -> Result<(), String> {
        self.evaluate_for(caller, arn, action, resource, None, context)
    }

    fn evaluate_for(
        &self,
        caller: &Caller,
        arn: &str,
        action: &str,
        resource: &str,
        resource_policy: Option<&str>,
        context: &nimbus_policy::Context,
    ) -> Result<(), String> {
        if *caller == Caller::Root {
            return Ok(());
        }
        let resource_policy = resource_policy.and_then(|doc| self.compiled(doc));
        let docs = self.identity_policies(caller);
        let policies: Vec<Arc<nimbus_policy::Policy>> =
            docs.iter().filter_map(|d| self.compiled(d)).collect();
        let refs: Vec<&nimbus_policy::Policy> = policies.iter().map(AsRef::as_ref).collect();
        let principal = nimbus_policy::Principal::from_arn(arn);
        let req = nimbus_policy::Request {
            principal: &principal,
            action,
            resource,
            context,
        };
        match nimbus_policy::evaluate(&refs, resource_policy.as_deref(), &req) {
            nimbus_policy::Decision::Allow => Ok(()),
            nimbus_policy::Decision::ExplicitDeny => Err(format!(
                "User: {arn} is not authorized to perform: {action} on resource: {resource} with an explicit deny in an identity-based policy"
            )),
            nimbus_policy::Decision::ImplicitDeny => Err(format!(
                "User: {arn} is not authorized to perform: {action} on resource: {resource} because no identity-based policy allows the {action} action"
            )),
        }
    }

    // ---- trust ----

    /// Whether a role's trust policy lets `who` call `sts:AssumeRole`: an
    /// Allow statement naming it and no Deny that does. `who` is a service
    /// principal (`lambda.amazonaws.com`) or the caller's ARN.
    pub fn trust_allows(&self, role: &Role, who: &TrustedParty<'_>) -> bool {
        trust::allows(&role.trust_policy, &role.arn, who)
    }

    /// Checks that a role exists and that Lambda may assume it, with the
    /// message Lambda gives when it may not.
    pub fn check_lambda_role(&self, role_arn: &str) -> Result<(), String> {
        let cannot =
            || "The role defined for the function cannot be assumed by Lambda.".to_string();
        let role = self.role_by_arn(role_arn).ok_or_else(cannot)?;
        if self.trust_allows(&role, &TrustedParty::Service("lambda.amazonaws.com")) {
            Ok(())
        } else {
            Err(cannot())
        }
    }

    // ---- STS ----

    /// Issues temporary credentials for a role (the trust policy must have
    /// been checked by the caller). `duration_s` within 900..=max session.
    /// Temporary credentials a service (Lambda) takes for a role on the
    /// role's behalf: the trust policy is the caller's to check, and the
    /// session is not bounded by the role's MaxSessionDuration (Lambda's
    /// execution-role sessions are not either).
    /// A session for a service acting with a role (Lambda running a
    /// function): the session name is the function's name, which may be a
    /// single character where `AssumeRole` requires two.
    pub fn service_session(
        &self,
        role_arn: &str,
        session_name: &str,
        duration_s: u32,
    ) -> IamResult<Session> {
        self.new_session(role_arn, session_name, duration_s, u32::MAX)
    }

    pub fn assume_role(
        &self,
        role_arn: &str,
        session_name: &str,
        duration_s: u32,
    ) -> IamResult<Session> {
        if session_name.len() < 2
            || session_name.len() > 64
            || !session_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))
        {
            return Err(IamError::Validation(format!(
                "1 validation error detected: Value '{session_name}' at 'roleSessionName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]*"
            )));
        }
        self.new_session(role_arn, session_name, duration_s, 0)
    }

    /// `max_s` 0 means the role's MaxSessionDuration.
    fn new_session(
        &self,
        role_arn: &str,
        session_name: &str,
        duration_s: u32,
        max_s: u32,
    ) -> IamResult<Session> {
        let role = self.role_by_arn(role_arn).ok_or_else(|| {
            IamError::AccessDenied(format!(
                "Role {role_arn} does not exist or is not assumable."
            ))
        })?;
        let max_s = if max_s == 0 {
            role.max_session_s
        } else {
            max_s
        };
        if !(900..=max_s).contains(&duration_s) {
            return Err(IamError::Validation(format!(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role ({}), or is below 900.",
                role.max_session_s
            )));
        }
        let session = Session {
            access_key_id: random_id("ASIA", 16),
            secret: random_secret(),
            token: {
                use base64::Engine as _;
                let mut b = [0u8; 96];
                let _ = getrandom::fill(&mut b);
                base64::engine::general_purpose::STANDARD.encode(b)
            },
            role_name: role.name.clone(),
            assumed_role_arn: format!(
                "arn:aws:sts::{}:assumed-role/{}/{session_name}",
                self.account_id, role.name
            ),
            assumed_role_id: format!("{}:{session_name}", role.id),
            expires: Utc::now() + chrono::Duration::seconds(i64::from(duration_s)),
        };
        let stored = Session {
            secret: self.sealer.seal(&session.secret),
            token: self.sealer.seal(&session.token),
            ..session.clone()
        };
        self.persist(NS_SESSION, &session.access_key_id, &stored)?;
        self.write()
            .sessions
            .insert(session.access_key_id.clone(), session.clone());
        Ok(session)
    }

    /// Forgets expired sessions (call periodically).
    pub fn expire_sessions(&self) {
        let now = Utc::now();
        let expired: Vec<String> = self
            .read()
            .sessions
            .values()
            .filter(|s| s.expires <= now)
            .map(|s| s.access_key_id.clone())
            .collect();
        for id in expired {
            let _ = self.unpersist(NS_SESSION, &id);
            self.write().sessions.remove(&id);
        }
    }
}

impl nimbus_auth::KeyStore for IamService {
    fn lookup(&self, access_key_id: &str) -> Option<nimbus_auth::Credential> {
        if access_key_id == self.root_key_id {
            return Some(nimbus_auth::Credential {
                secret_access_key: self.root_secret.clone(),
                session_token: None,
                principal: format!("arn:aws:iam::{}:root", self.account_id),
            });
        }
        let st = self.read();
        if let Some(k) = st.keys.get(access_key_id).filter(|k| k.active) {
            let arn = st.users.get(&k.user)?.arn.clone();
            return Some(nimbus_auth::Credential {
                secret_access_key: k.secret.clone(),
                session_token: None,
                principal: arn,
            });
        }
        st.sessions
            .get(access_key_id)
            .filter(|s| s.expires > Utc::now())
            .map(|s| nimbus_auth::Credential {
                secret_access_key: s.secret.clone(),
                session_token: Some(s.token.clone()),
                principal: s.assumed_role_arn.clone(),
            })
    }
}
