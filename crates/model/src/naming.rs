//! Names of tenant databases and roles. They are generated from the tenant id
//! and a configured prefix, never from organization names or slugs, and are
//! always quoted when they reach SQL.

use std::fmt;

use crate::ids::TenantId;

/// PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
const MAX_IDENT: usize = 63;
/// A tenant name is the prefix and 32 hex digits.
const ID_LEN: usize = 32;
const TEMPLATE_SUFFIX: &str = "template";
/// A tenant's owner role is its name and this suffix.
const OWNER_SUFFIX: &str = "_owner";
/// A warm-pool spare's name is the prefix, this infix and 24 hex digits (a
/// tenant's 32 would not fit beside the owner suffix and a long prefix).
const SPARE_INFIX: &str = "spare_";
const SPARE_ID_LEN: usize = 24;
/// The longest prefix: a tenant's owner role name (prefix, id, suffix) must
/// fit in an identifier.
const MAX_PREFIX: usize = MAX_IDENT - ID_LEN - OWNER_SUFFIX.len();

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid tenant name prefix {0:?}: use 1-25 lowercase ASCII letters, digits or '_', starting with a letter or '_'")]
pub struct PrefixError(String);

/// The prefix of every database and role tenant-plane creates
/// (`tenants.prefix`, default `tenant_`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPrefix(String);

impl TenantPrefix {
    pub fn parse(prefix: &str) -> Result<Self, PrefixError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !prefix.as_bytes()[0].is_ascii_digit();
        if ok {
            Ok(Self(prefix.to_owned()))
        } else {
            Err(PrefixError(prefix.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The database and role names of a tenant (the same text: databases and
    /// roles live in separate namespaces, and one name is easier to follow).
    pub fn tenant_ident(&self, tenant: TenantId) -> PgIdent {
        PgIdent(format!("{}{}", self.0, tenant.as_uuid().simple()))
    }

    /// The NOLOGIN role that owns a tenant's database and every object in
    /// it, so that the tenant's own login role owns nothing.
    pub fn owner_ident(&self, tenant: TenantId) -> PgIdent {
        PgIdent(format!(
            "{}{}{OWNER_SUFFIX}",
            self.0,
            tenant.as_uuid().simple()
        ))
    }

    /// The template database of this prefix.
    pub fn template_ident(&self) -> PgIdent {
        PgIdent(format!("{}{TEMPLATE_SUFFIX}", self.0))
    }

    /// The NOLOGIN role that owns the template's objects (and so, until they
    /// are handed to the tenant's owner, a fresh clone's).
    pub fn template_owner_ident(&self) -> PgIdent {
        PgIdent(format!("{}{TEMPLATE_SUFFIX}{OWNER_SUFFIX}", self.0))
    }

    /// The database and login role of warm-pool spare `spare`, until a
    /// claim renames them to a tenant's.
    pub fn spare_ident(&self, spare: uuid::Uuid) -> PgIdent {
        let hex = spare.simple().to_string();
        PgIdent(format!(
            "{}{SPARE_INFIX}{}",
            self.0,
            &hex[hex.len() - SPARE_ID_LEN..]
        ))
    }

    /// The NOLOGIN owner role of warm-pool spare `spare`.
    pub fn spare_owner_ident(&self, spare: uuid::Uuid) -> PgIdent {
        PgIdent(format!("{}{OWNER_SUFFIX}", self.spare_ident(spare).0))
    }

    /// True when `name` is a spare's database, login or owner role under
    /// this prefix.
    pub fn owns_spare_name(&self, name: &str) -> bool {
        let base = name.strip_suffix(OWNER_SUFFIX).unwrap_or(name);
        base.strip_prefix(&self.0)
            .and_then(|rest| rest.strip_prefix(SPARE_INFIX))
            .is_some_and(|id| id.len() == SPARE_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// True when `name` is one of ours: a tenant name under this prefix.
    pub fn owns_tenant_name(&self, name: &str) -> bool {
        name.strip_prefix(&self.0)
            .is_some_and(|rest| rest.len() == ID_LEN && rest.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// True when `name` is a tenant's owner role under this prefix.
    pub fn owns_owner_name(&self, name: &str) -> bool {
        name.strip_suffix(OWNER_SUFFIX)
            .is_some_and(|base| self.owns_tenant_name(base))
    }

    /// A `LIKE` pattern matching every name under this prefix (with `_` and
    /// `%` escaped, since `_` is common in prefixes).
    pub fn like_pattern(&self) -> String {
        format!("{}%", self.0.replace('\\', "\\\\").replace('_', "\\_"))
    }
}

impl fmt::Display for TenantPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An identifier we generated (so it is plain ASCII and short). `Display`
/// writes it quoted, so it can only reach SQL as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgIdent(String);

impl PgIdent {
    /// Accepts an identifier read back from the registry, checking it is one
    /// tenant-plane could have generated.
    pub fn parse(name: &str) -> Option<Self> {
        let ok = !name.is_empty()
            && name.len() <= MAX_IDENT
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        ok.then(|| Self(name.to_owned()))
    }

    /// The bare name, for use as a query parameter (`WHERE datname = $1`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Serialised bare (as stored in the registry), unlike `Display`.
impl serde::Serialize for PgIdent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl AsRef<str> for PgIdent {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PgIdent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&quote_ident(&self.0))
    }
}

/// Quotes any string as a PostgreSQL identifier: wraps it in double quotes
/// and doubles embedded ones, exactly as `quote_ident()` does server-side.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal (`'...'` with quotes doubled). Used only for the
/// SCRAM verifier in `PASSWORD '...'`, which DDL cannot take as a parameter.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_prefix_and_hex_and_fit_postgres() {
        let prefix = TenantPrefix::parse("tenant_").unwrap();
        let id = TenantId::new();
        let name = prefix.tenant_ident(id);
        assert!(name.as_str().starts_with("tenant_"));
        assert_eq!(name.as_str().len(), 7 + 32);
        assert!(prefix.owns_tenant_name(name.as_str()));
        assert!(!prefix.owns_tenant_name(prefix.template_ident().as_str()));
        assert!(!prefix.owns_tenant_name("tenant_abc"));
        let longest = TenantPrefix::parse(&"p".repeat(25)).unwrap();
        assert!(longest.tenant_ident(id).as_str().len() <= MAX_IDENT);
        assert_eq!(longest.owner_ident(id).as_str().len(), MAX_IDENT);
        assert!(PgIdent::parse(longest.owner_ident(id).as_str()).is_some());
        assert!(longest.template_owner_ident().as_str().len() <= MAX_IDENT);
    }

    #[test]
    fn spare_names_fit_postgres_and_are_told_apart_from_tenants() {
        let prefix = TenantPrefix::parse(&"p".repeat(MAX_PREFIX)).unwrap();
        let id = uuid::Uuid::new_v4();
        let (spare, owner) = (prefix.spare_ident(id), prefix.spare_owner_ident(id));
        assert!(owner.as_str().len() <= MAX_IDENT, "{owner}");
        assert_eq!(owner.as_str(), format!("{}_owner", spare.as_str()));
        assert!(prefix.owns_spare_name(spare.as_str()));
        assert!(prefix.owns_spare_name(owner.as_str()));
        assert!(!prefix.owns_tenant_name(spare.as_str()));
        assert!(!prefix.owns_owner_name(owner.as_str()));
        let tenant = prefix.tenant_ident(TenantId::new());
        assert!(!prefix.owns_spare_name(tenant.as_str()));
        assert_ne!(prefix.spare_ident(uuid::Uuid::new_v4()), spare);
    }

    #[test]
    fn owner_roles_are_told_apart_from_tenant_names() {
        let prefix = TenantPrefix::parse("tenant_").unwrap();
        let id = TenantId::new();
        let owner = prefix.owner_ident(id);
        assert!(owner.as_str().ends_with("_owner"));
        assert!(prefix.owns_owner_name(owner.as_str()));
        assert!(!prefix.owns_tenant_name(owner.as_str()));
        assert!(!prefix.owns_owner_name(prefix.tenant_ident(id).as_str()));
        assert!(!prefix.owns_owner_name(prefix.template_owner_ident().as_str()));
        assert!(!TenantPrefix::parse("other_")
            .unwrap()
            .owns_owner_name(owner.as_str()));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for bad in [
            "",
            "Tenant_",
            "1tenant",
            "ten-ant",
            "te\"nant",
            "tenant ",
            &"p".repeat(26),
        ] {
            assert!(TenantPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_ident("x\"; DROP DATABASE y; --"),
            "\"x\"\"; DROP DATABASE y; --\""
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(
            PgIdent::parse("tenant_abc").unwrap().to_string(),
            "\"tenant_abc\""
        );
        assert!(PgIdent::parse("Robert\"; --").is_none());
    }

    #[test]
    fn like_pattern_escapes_underscores() {
        let p = TenantPrefix::parse("tp_x_").unwrap();
        assert_eq!(p.like_pattern(), "tp\\_x\\_%");
    }
}
