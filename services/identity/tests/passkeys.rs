//! Passkey ceremonies driven by a software authenticator (webauthn-authenticator-rs's
//! `SoftPasskey`, which builds and signs what a real authenticator would),
//! through the identity library with its database, no HTTP.
// A panic is how a test fails: unwrapping is the point here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use civichub_identity::{Identity, NewUser, Password, Settings};
use civichub_store::{Db, DbUrl};
use url::Url;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_rs_proto::{AllowCredentials, CreationChallengeResponse, PublicKeyCredential, RequestChallengeResponse, UserVerificationPolicy};

const ISSUER: &str = "http://localhost:8080";

struct Fixture {
    _dir: tempfile::TempDir,
    id: std::sync::Arc<Identity>,
    origin: Url,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
    let id = Identity::open(db, Settings::new(ISSUER.parse().unwrap())).await.unwrap();
    Fixture { _dir: dir, id, origin: ISSUER.parse().unwrap() }
}

async fn person(f: &Fixture, name: &str) -> String {
    f.id.users.add(&name.parse().unwrap(), Password::new("password-123".into()).unwrap(), NewUser::default()).await.unwrap().id
}

/// A person registers a passkey held by `auth`; its credential id.
async fn register(f: &Fixture, auth: &mut SoftPasskey, user_id: &str, name: &str) -> String {
    let (key, options) = f.id.passkeys.begin_registration(user_id, name, name).await.unwrap();
    let answer = auth.do_registration(f.origin.clone(), as_soft_passkey_accepts(options)).unwrap();
    f.id.passkeys.finish_registration(user_id, &key, "工作电脑", &answer).await.unwrap().id
}

/// SoftPasskey keeps its keys in memory and refuses `requireResidentKey`;
/// whether a credential is discoverable is the authenticator's business and
/// nothing in its answer shows it, so the flag is cleared for it.
fn as_soft_passkey_accepts(mut options: CreationChallengeResponse) -> CreationChallengeResponse {
    if let Some(selection) = options.public_key.authenticator_selection.as_mut() {
        selection.require_resident_key = false;
    }
    options
}

/// What a browser does in a discoverable login: the authenticator picks its
/// credential (`cred_id`) and returns the user handle it was created with.
fn discover(auth: &mut SoftPasskey, origin: &Url, mut options: RequestChallengeResponse, cred_id: &str, handle: &[u8]) -> PublicKeyCredential {
    use base64::Engine;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cred_id).unwrap();
    options.public_key.allow_credentials = vec![AllowCredentials { type_: "public-key".into(), id: raw, transports: None }];
    let mut answer = auth.do_authentication(origin.clone(), options).unwrap();
    answer.response.user_handle = Some(handle.to_vec());
    answer
}

/// The user handle the registration options carried for `user_id`.
async fn handle_of(f: &Fixture, user_id: &str) -> Vec<u8> {
    let (_, options) = f.id.passkeys.begin_registration(user_id, "x", "x").await.unwrap();
    options.public_key.user.id.to_vec()
}

#[tokio::test]
async fn a_registered_passkey_signs_its_owner_in_without_a_password() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    let cred = register(&f, &mut auth, &alice, "alice").await;

    let listed = f.id.passkeys.list(&alice).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].name.as_str(), listed[0].last_used_at), (cred.as_str(), "工作电脑", None));
    assert!(f.id.has_second_factor(&alice).await.unwrap(), "a passkey is a second factor after a password");

    let handle = handle_of(&f, &alice).await;
    let (key, options) = f.id.passkeys.begin_login().await.unwrap();
    assert!(options.public_key.allow_credentials.is_empty(), "a discoverable login names no credential");
    let answer = discover(&mut auth, &f.origin, options, &cred, &handle);
    let used = f.id.passkeys.finish_login(&key, &answer).await.unwrap();
    assert_eq!(used.user_id, alice);
    assert_eq!(used.amr(), "hwk", "SoftPasskey's credentials are not backup-eligible");
    assert!(f.id.passkeys.list(&alice).await.unwrap()[0].last_used_at.is_some());

    // The same answer again: the ceremony is gone.
    let again = f.id.passkeys.finish_login(&key, &answer).await;
    assert!(again.is_err(), "a ceremony finishes once");
}

#[tokio::test]
async fn registration_asks_for_a_discoverable_credential_with_user_verification_and_excludes_existing_ones() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    let cred = register(&f, &mut auth, &alice, "alice").await;
    let (_, options) = f.id.passkeys.begin_registration(&alice, "alice", "Alice").await.unwrap();
    let json = serde_json::to_value(&options).unwrap();
    let selection = &json["publicKey"]["authenticatorSelection"];
    assert_eq!(selection["residentKey"], "required");
    assert_eq!(selection["userVerification"], "required");
    assert_eq!(json["publicKey"]["rp"]["id"], "localhost");
    let excluded: Vec<&str> = json["publicKey"]["excludeCredentials"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(excluded, [cred.as_str()]);
}

#[tokio::test]
async fn an_authenticator_that_did_not_verify_the_user_is_refused() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    register(&f, &mut auth, &alice, "alice").await;

    let (key, mut options) = f.id.passkeys.begin_second_factor(&alice).await.unwrap().unwrap();
    // A client that only tests presence: the authenticator signs without the UV flag.
    options.public_key.user_verification = UserVerificationPolicy::Discouraged_DO_NOT_USE;
    let answer = auth.do_authentication(f.origin.clone(), options).unwrap();
    assert!(f.id.passkeys.finish_second_factor(&alice, &key, &answer).await.is_err(), "user verification is required");

    // With verification it passes.
    let (key, options) = f.id.passkeys.begin_second_factor(&alice).await.unwrap().unwrap();
    let answer = auth.do_authentication(f.origin.clone(), options).unwrap();
    assert_eq!(f.id.passkeys.finish_second_factor(&alice, &key, &answer).await.unwrap().user_id, alice);
}

#[tokio::test]
async fn a_signature_counter_that_goes_back_is_refused_as_a_clone() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    register(&f, &mut auth, &alice, "alice").await;

    // Two ceremonies; the authenticator signs the first (counter 1), then the second (counter 2).
    let (first_key, first) = f.id.passkeys.begin_second_factor(&alice).await.unwrap().unwrap();
    let (second_key, second) = f.id.passkeys.begin_second_factor(&alice).await.unwrap().unwrap();
    let older = auth.do_authentication(f.origin.clone(), first).unwrap();
    let newer = auth.do_authentication(f.origin.clone(), second).unwrap();
    f.id.passkeys.finish_second_factor(&alice, &second_key, &newer).await.unwrap();
    // The older assertion arrives after: its counter (1) is not above the stored one (2).
    assert!(f.id.passkeys.finish_second_factor(&alice, &first_key, &older).await.is_err());
}

#[tokio::test]
async fn a_credential_of_another_person_is_refused() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let bob = person(&f, "bob").await;
    let mut alices = SoftPasskey::new(true);
    let mut bobs = SoftPasskey::new(true);
    register(&f, &mut alices, &alice, "alice").await;
    let bob_cred = register(&f, &mut bobs, &bob, "bob").await;

    // As Alice's second factor, Bob's passkey is not among those allowed.
    let (key, mut options) = f.id.passkeys.begin_second_factor(&alice).await.unwrap().unwrap();
    let raw = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&bob_cred).unwrap()
    };
    options.public_key.allow_credentials = vec![AllowCredentials { type_: "public-key".into(), id: raw, transports: None }];
    let answer = bobs.do_authentication(f.origin.clone(), options).unwrap();
    assert!(f.id.passkeys.finish_second_factor(&alice, &key, &answer).await.is_err());

    // In a discoverable login, Bob's credential presented with Alice's user handle.
    let alice_handle = handle_of(&f, &alice).await;
    let (key, options) = f.id.passkeys.begin_login().await.unwrap();
    let answer = discover(&mut bobs, &f.origin, options, &bob_cred, &alice_handle);
    assert!(f.id.passkeys.finish_login(&key, &answer).await.is_err());

    // A finished registration cannot be claimed by someone else's ceremony key.
    let (key, options) = f.id.passkeys.begin_registration(&alice, "alice", "alice").await.unwrap();
    let answer = alices.do_registration(f.origin.clone(), as_soft_passkey_accepts(options)).unwrap();
    assert!(f.id.passkeys.finish_registration(&bob, &key, "x", &answer).await.is_err(), "the ceremony was Alice's");
}

#[tokio::test]
async fn removing_passkeys() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    let first = register(&f, &mut auth, &alice, "alice").await;
    register(&f, &mut auth, &alice, "alice").await;
    assert_eq!(f.id.passkeys.remove(&alice, &first).await.unwrap().as_deref(), Some("工作电脑"));
    assert_eq!(f.id.passkeys.remove(&alice, &first).await.unwrap(), None);
    assert!(f.id.has_second_factor(&alice).await.unwrap(), "one passkey is left");
    assert!(f.id.mfa.reset(&alice).await.unwrap(), "an admin reset removes passkeys too");
    assert!(!f.id.has_second_factor(&alice).await.unwrap());
}

#[tokio::test]
async fn an_ip_address_issuer_has_no_passkeys() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.unwrap();
    let id = Identity::open(db, Settings::new("http://127.0.0.1:8080".parse().unwrap())).await.unwrap();
    assert!(!id.passkeys.available());
    assert!(id.passkeys.begin_login().await.is_err());
}

#[tokio::test]
async fn recovery_codes_stand_in_for_a_lost_passkey_once_each() {
    let f = fixture().await;
    let alice = person(&f, "alice").await;
    let mut auth = SoftPasskey::new(true);
    let cred = register(&f, &mut auth, &alice, "alice").await;
    let codes = f.id.mfa.issue_recovery_codes(&alice).await.unwrap();
    let at = civichub_store::now();
    assert_eq!(f.id.mfa.verify(&alice, &codes[0], at).await.unwrap(), Some(civichub_identity::Proof::RecoveryCode), "no authenticator app is needed");
    assert_eq!(f.id.mfa.verify(&alice, &codes[0], at).await.unwrap(), None, "a recovery code works once");
    // Removing the last passkey leaves no second factor, and no recovery codes.
    f.id.passkeys.remove(&alice, &cred).await.unwrap();
    assert_eq!(f.id.mfa.recovery_codes_left(&alice).await.unwrap(), 0);
}
