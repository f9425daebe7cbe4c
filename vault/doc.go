// Package vault keeps the agent's private keys and small secrets.
//
// A key is named by a URI whose scheme selects a backend: "keyring:" for the
// platform keychain (Windows Credential Manager, macOS Keychain, Secret
// Service, KWallet, pass, or an encrypted file for headless hosts) and
// "pkcs11:" (RFC 7512) for HSMs, smart cards and TPMs. Callers see a key only
// as a [crypto.Signer] with its JOSE algorithm, its RFC 7638 thumbprint as
// kid, and its public JWK; they never see private key material.
//
// A URI names a key ring rather than a single key: rotation adds a version,
// publishes it beside the old one, starts signing with it once responders
// have had time to fetch the new JWK Set, and retires the old one after an
// overlap. See [RotationPolicy].
//
// The vault must never write a private key to disk in clear, never log or
// print one, and never put key material or secrets into an error. It imports
// no other package of this module.
package vault
