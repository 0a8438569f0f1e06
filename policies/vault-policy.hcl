# The least a keyrotor Vault token needs, with the default settings (mount "secret",
# KEYROTOR_VAULT_PATH "aws/{account_id}/{user_name}", KEYROTOR_STATE_PATH "keyrotor/{account_id}/{user_name}",
# KEYROTOR_WAITING_PATH "keyrotor-waker/waiting/{account_id}/{user_name}", KEYROTOR_WAKER_LEASE_PATH "keyrotor-waker/lease").
# Applications only need "read" on secret/data/aws/<account>/<their user>.

# The secret applications read: keyrotor reads it, and writes new versions with check-and-set.
path "secret/data/aws/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/aws/*" {
  capabilities = ["read"]
}

# keyrotor's own records: rotation state (with its version history), lease, and the not-yet-published key.
path "secret/data/keyrotor/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/keyrotor/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# The waker's records: the index of parked rotations (when each is looked at next) and the waker's lease.
path "secret/data/keyrotor-waker/*" {
  capabilities = ["create", "read", "update"]
}
path "secret/metadata/keyrotor-waker/*" {
  capabilities = ["read", "update", "delete", "list"]
}

# Lets keyrotor check, before changing anything, that the mount exists and is KV version 2.
path "sys/internal/ui/mounts/secret" {
  capabilities = ["read"]
}
