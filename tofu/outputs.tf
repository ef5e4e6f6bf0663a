output "node_records" {
  description = "FQDN of each node's record."
  value       = module.cloudflare-dns.node_fqdns
}

output "service_records" {
  description = "FQDN of each service's record."
  value       = module.cloudflare-dns.service_fqdns
}

output "velero_bucket" {
  description = "Name of the Velero bucket (VELERO_BUCKET)."
  value       = module.r2.velero_bucket
}

output "etcd_bucket" {
  description = "Name of the etcd snapshot bucket (K3S_ETCD_S3_BUCKET)."
  value       = module.r2.etcd_bucket
}

output "r2_endpoint" {
  description = "S3 endpoint of the account's R2 (R2_ENDPOINT)."
  value       = module.r2.endpoint
}
