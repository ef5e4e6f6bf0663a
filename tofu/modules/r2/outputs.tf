output "velero_bucket" {
  description = "Name of the Velero bucket."
  value       = cloudflare_r2_bucket.velero.name
}

output "etcd_bucket" {
  description = "Name of the etcd snapshot bucket."
  value       = cloudflare_r2_bucket.etcd.name
}

output "endpoint" {
  description = "S3 API endpoint of the account's R2."
  value       = "https://${var.account_id}.r2.cloudflarestorage.com"
}
