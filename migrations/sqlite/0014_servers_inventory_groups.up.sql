-- The server's groups as ansible reads them (from an inventory import or source): a JSON array
-- of chains of group names, from the top group down to the group that lists the host, `all`
-- and `ungrouped` left out, e.g. [["prod","web"],["dc_fra1"]]. NULL or [] = no groups. The
-- agent nests the job's one-host inventory in these groups so `hosts: web` and
-- group_vars/web.yml apply as in a checkout.
ALTER TABLE servers ADD COLUMN inventory_groups JSON NULL;
