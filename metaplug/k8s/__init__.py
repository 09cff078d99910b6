"""Kubernetes access for metaplug: credentials and a small REST client.

Modules (nothing is imported eagerly; httpx loads only when a KubeClient is built):
  kubeconfig  Credentials, load_kubeconfig (kubeconfig file), in_cluster_credentials (service account)
  client      KubeClient: get pod, get NetworkAttachmentDefinition, publish network-status, post events
"""
