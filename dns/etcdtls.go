package main

import "crypto/tls"

// pinClientCert loads the etcd client's key pair once. etcd's TLS config reads the files
// again on every handshake; the sidecar runs unprivileged after its start and could not
// read a root-only key on a reconnect. A rotated key pair takes a restart of the sidecar.
func pinClientCert(cfg *tls.Config, certFile, keyFile string) error {
	if certFile == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	return nil
}
