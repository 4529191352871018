variable "release" { type = string }
variable "rev" { type = string }
variable "db_password" {
  type      = string
  sensitive = true
}
variable "extra" { type = bool }
variable "fail" { type = bool }

module "payments" {
  source      = "./payments"
  release     = var.release
  rev         = var.rev
  db_password = var.db_password
  extra       = var.extra
  fail        = var.fail
}
