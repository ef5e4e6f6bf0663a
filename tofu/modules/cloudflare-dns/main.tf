# DNS records for the nodes (A, and AAAA when an IPv6 address is given) and CNAMEs for services.

locals {
  ipv6_nodes = { for name, node in var.nodes : name => node if node.ipv6 != null }
}

resource "cloudflare_dns_record" "node_a" {
  for_each = var.nodes

  zone_id = var.zone_id
  name    = "${each.key}.${var.domain}"
  type    = "A"
  content = each.value.ipv4
  proxied = each.value.proxied
  ttl     = each.value.proxied ? 1 : var.ttl
  comment = "k3sfleet node"
}

resource "cloudflare_dns_record" "node_aaaa" {
  for_each = local.ipv6_nodes

  zone_id = var.zone_id
  name    = "${each.key}.${var.domain}"
  type    = "AAAA"
  content = each.value.ipv6
  proxied = each.value.proxied
  ttl     = each.value.proxied ? 1 : var.ttl
  comment = "k3sfleet node"
}

resource "cloudflare_dns_record" "service" {
  for_each = var.services

  zone_id = var.zone_id
  name    = "${each.key}.${var.domain}"
  type    = "CNAME"
  content = "${each.value.node}.${var.domain}"
  proxied = each.value.proxied
  ttl     = each.value.proxied ? 1 : var.ttl
  comment = "k3sfleet service"
}
