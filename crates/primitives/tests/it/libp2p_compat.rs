//! Our key files and peer ids are exactly libp2p's (checked against
//! libp2p-identity 0.3, the crate rust-libp2p uses).

use hypertensor_primitives::{DEV_ACCOUNT_NAMES, Keypair, PeerId};

#[test]
fn our_key_file_is_a_libp2p_identity_with_the_same_peer_id() {
    for name in DEV_ACCOUNT_NAMES {
        let ours = Keypair::dev(name);
        let theirs =
            libp2p_identity::Keypair::from_protobuf_encoding(&ours.to_protobuf_encoding()).unwrap();
        assert_eq!(
            theirs.public().to_peer_id().to_string(),
            ours.peer_id().to_string()
        );
        let ed = theirs.clone().try_into_ed25519().unwrap();
        assert_eq!(ed.public().to_bytes(), ours.account_id().0);
    }
}

#[test]
fn libp2p_key_files_read_as_ours_and_byte_identical() {
    let secret = [42u8; 32];
    let theirs = libp2p_identity::Keypair::ed25519_from_bytes(secret).unwrap();
    let file = theirs.to_protobuf_encoding().unwrap();
    let ours = Keypair::from_protobuf_encoding(&file).unwrap();
    assert_eq!(ours.secret_bytes(), secret);
    assert_eq!(ours.to_protobuf_encoding(), file);
}

#[test]
fn peer_id_strings_and_bytes_agree_with_libp2p() {
    let ours = Keypair::dev("alice").peer_id();
    let theirs: libp2p_identity::PeerId = ours.to_string().parse().unwrap();
    assert_eq!(theirs.to_bytes(), ours.as_bytes());
    let back: PeerId = theirs.to_base58().parse().unwrap();
    assert_eq!(back, ours);
    // A signature made by our key verifies with libp2p's public key.
    let key = Keypair::dev("bob");
    let lib =
        libp2p_identity::Keypair::from_protobuf_encoding(&key.to_protobuf_encoding()).unwrap();
    assert!(lib.public().verify(b"hello", &key.sign(b"hello").0));
}
