//! The `stick` backend in the registry ([`KIND`]): targets `stick:/media/usb`, the mount point
//! of the medium. What the registry's backend-neutral words mean here:
//!
//! - the *identity file* is this machine's age X25519 identity ([`MachineKey`]), created by
//!   [`BackendKind::machine_identity`];
//! - the *passphrase* is the stick's recovery passphrase;
//! - the *pin* is the [`StickId`] the config records (`stick_id`): another stick is refused;
//! - a *grant* is the list of machines (and passphrase) the stick secret is wrapped for.

use std::sync::Arc;

use briefcase_mirror::registry::{
    absolute_path, Address, BackendKind, Grant, MachineIdentity, OpenContext, OpenError,
    OpenedMirror, Place, Target,
};
use briefcase_mirror::{Mirror, MirrorError, MirrorResult};

use crate::{MachineKey, Recipient, Recipients, StickId, StickMirror, Unlock};

/// The `stick` backend in the registry: `stick:/media/usb`.
pub static KIND: StickKind = StickKind;

/// The [`BackendKind`] of the `stick` backend (see [`KIND`]).
#[derive(Debug)]
pub struct StickKind;

impl BackendKind for StickKind {
    fn scheme(&self) -> &'static str {
        "stick"
    }

    fn syntax(&self) -> &'static str {
        "an encrypted stick (`stick:/media/usb`)"
    }

    fn noun(&self) -> &'static str {
        "stick"
    }

    fn parse(&self, address: &str) -> Result<Address, String> {
        if address.is_empty() {
            return Err("give the stick's mount point: stick:/media/usb".into());
        }
        let path = absolute_path(address)?;
        Ok(Address {
            text: path.display().to_string(),
            place: Some(Place {
                path,
                // MOUNT/briefcase/FOLDER-ID/STICK
                marker_depth: 2,
                plain: false,
            }),
        })
    }

    fn machine_identity(
        &self,
        identity_file: &std::path::Path,
    ) -> Result<Option<MachineIdentity>, OpenError> {
        let (key, created) = MachineKey::load_or_create(identity_file).map_err(key_error)?;
        Ok(Some(MachineIdentity {
            public_key: key.recipient().to_string(),
            created,
        }))
    }

    fn open(&self, target: &Target, ctx: &OpenContext) -> Result<Box<dyn OpenedMirror>, OpenError> {
        let mount = match target.place() {
            Some(p) => p.path.clone(),
            None => std::path::PathBuf::from(target.address()),
        };
        let machine = match &ctx.identity_file {
            Some(f) => MachineKey::load(f).map_err(key_error)?,
            None => None,
        };
        let pin = match &ctx.pin {
            None => None,
            Some(t) => Some(t.parse::<StickId>().map_err(|e| OpenError::Access {
                what: "the stick ID the config records for it (stick_id)".into(),
                reason: format!("{e}; fix it, or remove and add the mirror again"),
            })?),
        };
        let me = machine.as_ref().map(MachineKey::recipient);
        let create = match &ctx.create {
            Some(g) => Some(
                recipients(g, me.as_ref()).map_err(|reason| OpenError::Access {
                    what: "a recipient".into(),
                    reason,
                })?,
            ),
            None => None,
        };
        let mut stick = StickMirror::new(
            mount,
            ctx.folder,
            Unlock {
                machine,
                passphrase: ctx.passphrase.clone(),
            },
            create,
        )
        .with_pin(pin);
        if let (None, Some(hook)) = (pin, &ctx.on_pin) {
            let hook = Arc::clone(hook);
            stick = stick.on_first_pin(Arc::new(move |id: &StickId| hook(&id.to_string())));
        }
        Ok(Box::new(OpenedStick { stick, me }))
    }
}

/// Maps a key-file error (its message names the file and what to do).
fn key_error(e: crate::KeyError) -> OpenError {
    OpenError::Access {
        what: "this machine's identity".into(),
        reason: e.to_string(),
    }
}

/// The machines and passphrase of `g`, this machine (`me`, labelled with `g.machine_label`)
/// first.
fn recipients(g: &Grant, me: Option<&age::x25519::Recipient>) -> Result<Recipients, String> {
    let mut machines = Vec::with_capacity(g.recipients.len() + 1);
    if let Some(me) = me {
        machines.push(Recipient {
            key: me.clone(),
            label: g.machine_label.clone(),
        });
    }
    for r in &g.recipients {
        machines.push(Recipient::parse(&r.key, &r.label)?);
    }
    Ok(Recipients {
        machines,
        passphrase: g.passphrase.clone(),
    })
}

/// A stick the registry opened, with this machine's public key for grants.
struct OpenedStick {
    stick: StickMirror,
    me: Option<age::x25519::Recipient>,
}

#[async_trait::async_trait]
impl OpenedMirror for OpenedStick {
    fn mirror(&self) -> &dyn Mirror {
        &self.stick
    }

    fn into_mirror(self: Box<Self>) -> Box<dyn Mirror> {
        Box::new(self.stick)
    }

    async fn pin(&self) -> MirrorResult<Option<String>> {
        Ok(Some(self.stick.stick_id().await?.to_string()))
    }

    /// Adds `grant`'s machines and passphrase, and this machine, to the stick's encrypted list.
    /// With nothing but this machine to add, the list is only rewritten when it lacks it.
    async fn grant(&self, grant: &Grant) -> MirrorResult<Vec<String>> {
        if grant.recipients.is_empty() && grant.passphrase.is_none() {
            let Some(me) = &self.me else {
                return Ok(Vec::new());
            };
            if self.stick.recipients().await?.iter().any(|r| &r.key == me) {
                return Ok(Vec::new());
            }
        }
        let add = recipients(grant, self.me.as_ref()).map_err(|reason| MirrorError::Refused {
            location: self.stick.location(),
            path: "(the machines that may open it)".into(),
            reason,
        })?;
        Ok(self
            .stick
            .add_recipients(&add)
            .await?
            .into_iter()
            .map(|r| r.key.to_string())
            .collect())
    }
}
