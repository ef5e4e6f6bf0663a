output "node_fqdns" {
  description = "Node name -> FQDN."
  value       = { for name, record in cloudflare_dns_record.node_a : name => record.name }
}

output "service_fqdns" {
  description = "Service name -> FQDN."
  value       = { for name, record in cloudflare_dns_record.service : name => record.name }
}
