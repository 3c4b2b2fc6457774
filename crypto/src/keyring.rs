//! The set of a repository's key slots, and what `rewind key add | list |
//! remove` and opening a repository do with it. Plain data: where the
//! slots are stored (one file per slot) is the repository's business.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::kdf::{self, Argon2Params, SALT_LEN};
use crate::key_file::KeyFileKey;
use crate::master::MasterKey;
use crate::password::Password;
use crate::slot::{KeySlot, SlotId, SlotKind, SlotLabel};
use crate::{CryptoError, random};

/// A repository's key slots, in the order given.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    slots: Vec<KeySlot>,
}

/// The master keys, and which slot opened them.
#[derive(Debug)]
pub struct Opened {
    /// The repository's master keys.
    pub master: MasterKey,
    /// The slot that opened them (a command refuses to remove it, as
    /// restic refuses to remove the key in use).
    pub slot: SlotId,
}

impl Keyring {
    /// No slots: a new repository's, before its first slot is added.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// The slots read from a repository.
    pub fn from_slots(slots: Vec<KeySlot>) -> Keyring {
        Keyring { slots }
    }

    /// The slots, for listing and storing.
    pub fn slots(&self) -> &[KeySlot] {
        &self.slots
    }

    /// The slot with this id.
    pub fn get(&self, id: SlotId) -> Option<&KeySlot> {
        self.slots.iter().find(|s| s.id() == id)
    }

    /// Add a slot that opens `master` with `password`, argon2id with
    /// `params` ([`Argon2Params::DEFAULT`] unless a test says otherwise).
    /// Returns the new slot (for the caller to store).
    pub fn add_password(
        &mut self,
        master: &MasterKey,
        password: &Password,
        params: Argon2Params,
        label: SlotLabel,
    ) -> Result<&KeySlot, CryptoError> {
        let salt = random::bytes::<SALT_LEN>()?;
        let kek = kdf::from_password(password.bytes(), &salt, params)?;
        self.add(master, SlotKind::Password(params), label, salt, &kek)
    }

    /// Add a slot that opens `master` with the key file `key`.
    pub fn add_key_file(
        &mut self,
        master: &MasterKey,
        key: &KeyFileKey,
        label: SlotLabel,
    ) -> Result<&KeySlot, CryptoError> {
        let salt = random::bytes::<SALT_LEN>()?;
        let kek = kdf::from_key_file(key, &salt);
        self.add(master, SlotKind::KeyFile, label, salt, &kek)
    }

    fn add(
        &mut self,
        master: &MasterKey,
        kind: SlotKind,
        label: SlotLabel,
        salt: [u8; SALT_LEN],
        kek: &[u8; 32],
    ) -> Result<&KeySlot, CryptoError> {
        let id = loop {
            let id = SlotId(random::bytes::<4>()?);
            if self.get(id).is_none() {
                break id;
            }
        };
        // A clock before 1970 is a broken clock; the slot's time is only
        // shown, so 0 is an honest "unknown".
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let slot = KeySlot::seal(master, id, created, kind, label, salt, kek)?;
        self.slots.push(slot);
        Ok(&self.slots[self.slots.len() - 1])
    }

    /// Open the master keys with a password: every password slot is tried
    /// (one argon2id each), in order.
    pub fn open_with_password(&self, password: &Password) -> Result<Opened, CryptoError> {
        let mut tried = 0;
        for slot in &self.slots {
            if let SlotKind::Password(params) = slot.kind() {
                tried += 1;
                let kek = kdf::from_password(password.bytes(), slot.salt(), params)?;
                if let Some(master) = slot.unseal(&kek) {
                    return Ok(Opened {
                        master,
                        slot: slot.id(),
                    });
                }
            }
        }
        Err(CryptoError::WrongPassword { tried })
    }

    /// Open the master keys with a key file: every key-file slot is tried.
    pub fn open_with_key_file(&self, key: &KeyFileKey) -> Result<Opened, CryptoError> {
        let mut tried = 0;
        for slot in &self.slots {
            if slot.kind() == SlotKind::KeyFile {
                tried += 1;
                let kek = kdf::from_key_file(key, slot.salt());
                if let Some(master) = slot.unseal(&kek) {
                    return Ok(Opened {
                        master,
                        slot: slot.id(),
                    });
                }
            }
        }
        Err(CryptoError::WrongKeyFile { tried })
    }

    /// Remove a slot, refusing the last one (without a slot the master
    /// keys, and so the repository, are lost).
    pub fn remove(&mut self, id: SlotId) -> Result<KeySlot, CryptoError> {
        let at = self
            .slots
            .iter()
            .position(|s| s.id() == id)
            .ok_or_else(|| CryptoError::NoSuchSlot { id: id.to_string() })?;
        if self.slots.len() == 1 {
            return Err(CryptoError::LastSlot { id: id.to_string() });
        }
        Ok(self.slots.remove(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> Argon2Params {
        Argon2Params::new(64, 1, 1).unwrap()
    }

    fn pw(s: &str) -> Password {
        Password::new(s.as_bytes().to_vec())
    }

    #[test]
    fn each_password_opens_the_same_master_keys() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new();
        let a = ring
            .add_password(&master, &pw("first"), fast(), SlotLabel::default())
            .unwrap()
            .id();
        let b = ring
            .add_password(&master, &pw("second"), fast(), SlotLabel::default())
            .unwrap()
            .id();
        assert_ne!(a, b);
        let opened = ring.open_with_password(&pw("first")).unwrap();
        assert!(opened.master.same_as(&master));
        assert_eq!(opened.slot, a);
        let opened = ring.open_with_password(&pw("second")).unwrap();
        assert!(opened.master.same_as(&master));
        assert_eq!(opened.slot, b);
    }

    #[test]
    fn a_slot_with_the_default_parameters_opens() {
        // The parameters every real slot gets (64 MiB, 3 passes): argon2
        // accepts them, and a slot made with them opens (0.36 s for both
        // argon2id runs in a test build).
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new();
        ring.add_password(
            &master,
            &pw("default"),
            Argon2Params::DEFAULT,
            SlotLabel::default(),
        )
        .unwrap();
        let slot = KeySlot::decode(&ring.slots()[0].encode()).unwrap();
        assert_eq!(slot.kind(), SlotKind::Password(Argon2Params::DEFAULT));
        let ring = Keyring::from_slots(vec![slot]);
        assert!(
            ring.open_with_password(&pw("default"))
                .unwrap()
                .master
                .same_as(&master)
        );
    }

    #[test]
    fn a_wrong_password_fails_cleanly_after_trying_every_password_slot() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new();
        ring.add_password(&master, &pw("right"), fast(), SlotLabel::default())
            .unwrap();
        ring.add_key_file(
            &master,
            &KeyFileKey::generate().unwrap(),
            SlotLabel::default(),
        )
        .unwrap();
        ring.add_password(&master, &pw("other"), fast(), SlotLabel::default())
            .unwrap();
        let err = ring.open_with_password(&pw("wrong")).unwrap_err();
        assert!(matches!(err, CryptoError::WrongPassword { tried: 2 }));
        assert!(err.is_wrong_secret());
        assert!(matches!(
            Keyring::new().open_with_password(&pw("any")),
            Err(CryptoError::WrongPassword { tried: 0 })
        ));
    }

    #[test]
    fn a_key_file_opens_its_slot_and_no_other() {
        let master = MasterKey::generate().unwrap();
        let key = KeyFileKey::generate().unwrap();
        let mut ring = Keyring::new();
        ring.add_password(&master, &pw("pw"), fast(), SlotLabel::default())
            .unwrap();
        let id = ring
            .add_key_file(&master, &key, SlotLabel::default())
            .unwrap()
            .id();
        let opened = ring.open_with_key_file(&key).unwrap();
        assert!(opened.master.same_as(&master));
        assert_eq!(opened.slot, id);
        assert!(matches!(
            ring.open_with_key_file(&KeyFileKey::generate().unwrap()),
            Err(CryptoError::WrongKeyFile { tried: 1 })
        ));
    }

    #[test]
    fn slots_survive_their_files() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new();
        let label = SlotLabel {
            host: "nas".into(),
            user: "backup".into(),
        };
        ring.add_password(&master, &pw("pw"), fast(), label.clone())
            .unwrap();
        let files: Vec<Vec<u8>> = ring.slots().iter().map(|s| s.encode()).collect();
        let back = Keyring::from_slots(files.iter().map(|f| KeySlot::decode(f).unwrap()).collect());
        assert_eq!(back.slots()[0].label(), &label);
        assert!(back.slots()[0].created() > 1_700_000_000);
        assert_eq!(back.slots()[0].kind(), SlotKind::Password(fast()));
        assert!(
            back.open_with_password(&pw("pw"))
                .unwrap()
                .master
                .same_as(&master)
        );
    }

    #[test]
    fn removing_the_last_slot_is_refused() {
        let master = MasterKey::generate().unwrap();
        let mut ring = Keyring::new();
        let a = ring
            .add_password(&master, &pw("a"), fast(), SlotLabel::default())
            .unwrap()
            .id();
        let b = ring
            .add_password(&master, &pw("b"), fast(), SlotLabel::default())
            .unwrap()
            .id();
        assert!(matches!(
            ring.remove(SlotId([0xff; 4])),
            Err(CryptoError::NoSuchSlot { .. })
        ));
        assert_eq!(ring.remove(a).unwrap().id(), a);
        assert!(matches!(
            ring.open_with_password(&pw("a")),
            Err(CryptoError::WrongPassword { tried: 1 })
        ));
        assert!(matches!(ring.remove(b), Err(CryptoError::LastSlot { .. })));
        assert!(ring.open_with_password(&pw("b")).is_ok());
    }
}
