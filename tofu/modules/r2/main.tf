# R2 buckets for Velero backups and K3s etcd snapshots, each with lifecycle rules.
# Velero expires its own backups (Schedule TTLs) and keeps a kopia repository whose blobs outlive
# single backups, so its bucket only aborts stale multipart uploads unless a safety-net expiry is
# asked for. etcd snapshots are standalone files: they expire by age.

locals {
  day = 86400
}

resource "cloudflare_r2_bucket" "velero" {
  account_id = var.account_id
  name       = var.velero_bucket
  location   = var.location
}

resource "cloudflare_r2_bucket" "etcd" {
  account_id = var.account_id
  name       = var.etcd_bucket
  location   = var.location
}

resource "cloudflare_r2_bucket_lifecycle" "velero" {
  account_id  = var.account_id
  bucket_name = cloudflare_r2_bucket.velero.name

  rules = concat(
    [{
      id         = "abort-stale-multipart-uploads"
      enabled    = true
      conditions = { prefix = "" }
      abort_multipart_uploads_transition = {
        condition = { type = "Age", max_age = var.multipart_abort_days * local.day }
      }
    }],
    var.velero_expire_days > 0 ? [{
      id         = "safety-net-expiry"
      enabled    = true
      conditions = { prefix = "" }
      delete_objects_transition = {
        condition = { type = "Age", max_age = var.velero_expire_days * local.day }
      }
    }] : []
  )
}

resource "cloudflare_r2_bucket_lifecycle" "etcd" {
  account_id  = var.account_id
  bucket_name = cloudflare_r2_bucket.etcd.name

  rules = [{
    id         = "expire-etcd-snapshots"
    enabled    = true
    conditions = { prefix = "" }
    delete_objects_transition = {
      condition = { type = "Age", max_age = var.etcd_snapshot_retention_days * local.day }
    }
    abort_multipart_uploads_transition = {
      condition = { type = "Age", max_age = var.multipart_abort_days * local.day }
    }
  }]
}
